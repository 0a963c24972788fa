"""Fair shares of a cap held by many connections: who gives way when an addition does not fit.

Every front-end cap (request bytes held, answer bytes a client has not read yet) is a total over
connections. A total alone lets a few connections take all of it and lock every other client
out until they time out. So when an addition does not fit, the connection that wants it may
push out the connections holding more than it would, largest first; but only while its own
holding stays within its share of the cap (the cap divided among the connections holding any
of it, never less than ``floor``: one whole request or answer). A connection above its share is
always the one that gives way, and refusing it costs nothing it has not already sent.

The gRPC transport applies the same rule to the same caps (``native/grpc_front/src/lib.rs``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

T = TypeVar("T")


def make_room(
    limit: int, total: int, own: int, extra: int, others: Iterable[tuple[T, int]], floor: int = 0
) -> list[T] | None:
    """The holders to cut so that ``extra`` more for a holder already at ``own`` fits under ``limit``
    (``total`` is held by everyone, the wanting holder included, without ``extra``): the largest
    first, each holding more than the wanting holder would. None when the wanting holder is to give
    way instead: it would be over its share, or nobody holding more than it is left to cut.
    """
    if total + extra <= limit:
        return []
    holding = [(amount, holder) for holder, amount in others if amount > 0]
    share = max(limit // (len(holding) + 1), floor)
    wanted = own + extra
    if wanted > share:
        return None
    holding.sort(key=lambda pair: pair[0], reverse=True)
    cut: list[T] = []
    for amount, holder in holding:
        if amount <= wanted:
            return None
        cut.append(holder)
        total -= amount
        if total + extra <= limit:
            return cut
    return None

"""HTTP requests and responses as the routes see them, independent of the transport that parsed them."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

JSON = b"application/json"


class Headers:
    """Request headers by lower-case name; a repeated header keeps all its values."""

    __slots__ = ("values",)

    def __init__(self) -> None:
        # Every header: lower-case name -> its values in arrival order (the parser fills it directly).
        self.values: dict[str, list[str]] = {}

    def add(self, name: str, value: str) -> None:
        self.values.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str = "") -> str:
        values = self.values.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return self.values.get(name.lower(), [])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self.values

    def __len__(self) -> int:
        return sum(map(len, self.values.values()))


@dataclass(slots=True, eq=False)
class Request:
    """One parsed request; ``route`` is the metrics label the router sets."""

    method: str
    target: str
    version: str = "HTTP/1.1"
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    started: float = field(default_factory=time.perf_counter)
    keep_alive: bool = False
    route: str = "other"
    held: int = 0  # request bytes the front end counts against its buffer cap until the answer

    @property
    def path(self) -> str:
        """The target without its query string."""
        return self.target.partition("?")[0]


@dataclass(slots=True)
class Response:
    """What a route answers: status, body, content type and any extra headers."""

    status: int
    body: bytes
    content_type: bytes = JSON
    headers: tuple[tuple[str, str], ...] = ()
    # A streamed answer (server-sent events, tokens): its chunks, written as they come with
    # chunked transfer encoding under the connection's flow control; ``body`` is then unused.
    # The iterator is closed (its ``finally`` runs) when the client goes away.
    stream: AsyncIterator[bytes] | None = None

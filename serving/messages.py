"""HTTP requests and responses as the routes see them, independent of the transport that parsed them."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Protocol

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


class ResponseStream(Protocol):
    """The body of a streamed answer as a producer that pushes its pieces sees it.

    ``write`` and ``end`` are called on the event loop; after the client has gone both do nothing
    and ``on_disconnect`` (set by the producer) has been called once, so work can stop early.
    """

    on_disconnect: Callable[[], None] | None

    @property
    def closed(self) -> bool: ...
    def write(self, data: bytes) -> None: ...
    def end(self) -> None: ...


@dataclass(slots=True)
class StreamingResponse(Response):
    """An answer whose producer pushes its pieces (e.g. tokens from a decode thread, handed to the
    loop): ``start`` is called with a ``ResponseStream`` when the front end begins the answer; the
    producer writes to it and ends it. It becomes the ``stream`` the front end writes under its flow
    control, so there is one way to stream in ``serving.http1``. ``body`` is unused.
    """

    start: Callable[[ResponseStream], None] | None = None

    def __post_init__(self) -> None:
        if self.start is not None and self.stream is None:
            self.stream = _pushed(self.start)


class _Pushed:
    """A ``ResponseStream`` whose writes queue up for the iterator the front end pulls."""

    __slots__ = ("_ended", "gone", "on_disconnect", "pieces", "wake")

    def __init__(self) -> None:
        self.pieces: deque[bytes] = deque()
        self.wake = asyncio.Event()
        self.on_disconnect: Callable[[], None] | None = None
        self.gone = False
        self._ended = False

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def closed(self) -> bool:
        return self.gone or self._ended

    def write(self, data: bytes) -> None:
        if data and not self.closed:
            self.pieces.append(data)
            self.wake.set()

    def end(self) -> None:
        self._ended = True
        self.wake.set()


async def _pushed(start: Callable[[ResponseStream], None]) -> AsyncIterator[bytes]:
    """The pieces a pushing producer writes, as they come; closed early (the client left), it tells
    the producer once through ``on_disconnect`` so its work stops."""
    sink = _Pushed()
    start(sink)
    try:
        while True:
            while sink.pieces:
                yield sink.pieces.popleft()
            if sink.ended:
                return
            sink.wake.clear()
            await sink.wake.wait()
    finally:
        if not sink.ended:
            sink.gone = True
            callback, sink.on_disconnect = sink.on_disconnect, None
            if callback is not None:
                callback()

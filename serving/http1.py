"""HTTP/1.1 on an asyncio event loop: one small protocol object per connection, no thread per socket.

Why an event loop: with one thread per connection the server spent its time switching threads
(GIL and interpreter-lock hand-offs, about 16 context switches per request) rather than doing
Python work. Here one thread reads every socket, and the requests read in one pass of the loop
reach the batcher together, so they can run as one inference.

The parser is strict instead of lenient: anything it does not understand is answered with a JSON
4xx/5xx and the connection closes, so a proxy in front cannot disagree with it about where a
request ends. Bodies need a ``Content-Length`` (chunked bodies get 411); the length is checked
against the limit before the body is waited for (413). Requests on one connection are answered
one at a time, in order (pipelined requests wait in the buffer).
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol

from serving.config import ServingConfig
from serving.errors import ClientError, error_body
from serving.errors import show as _show
from serving.logs import log_event
from serving.messages import JSON, Request, Response

MAX_LINE = 65536  # bytes per request or header line
MAX_HEADERS = 100
MAX_HEAD = 2 * MAX_LINE  # request line + headers, in bytes
# A request must be complete this long after its first byte arrived, however slowly it trickles.
REQUEST_TIMEOUT_S = 30.0
# Idle keep-alive connections (and clients that stopped reading their answers) are cut off after
# this long so silent clients cannot pin memory.
IDLE_TIMEOUT_S = 75.0
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods, header names
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # not allowed in a header value (tab is)
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# After a response that closes the connection: send FIN, keep reading (and dropping) what the
# client still sends for this long once the answer is out, so it is not lost to a TCP reset.
LINGER_S = 2.0
LINGER_MAX_S = 60.0
# How often connections are checked for the timeouts above.
SWEEP_INTERVAL_S = 1.0  # ... but no longer than this after the last write, if the answer cannot leave


class App(Protocol):
    """What the front end calls for every request (``serving.app.App``)."""

    def handle(self, request: Request, conn: HttpConnection) -> None: ...
    def record(self, request: Request, status: int, remote: str) -> None: ...


class HttpServer:
    """The listening socket and its connections; everything runs on one event loop."""

    def __init__(self, address: tuple[str, int], app: App, config: ServingConfig) -> None:
        self.app = app
        self.draining = False
        self.max_body_bytes = config.max_body_bytes
        self.handle = app.handle
        self.record = app.record
        self._connections: set[HttpConnection] = set()
        self._closed: asyncio.Event | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        # Bound now, so a taken port fails before anything else starts and port 0 is known.
        self.socket = socket.create_server(address, backlog=1024, reuse_port=False)
        self.address: tuple[str, int] = self.socket.getsockname()[:2]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        self._server = await loop.create_server(
            lambda: HttpConnection(self), sock=self.socket, backlog=1024
        )
        self._sweeper = loop.call_later(SWEEP_INTERVAL_S, self._sweep)

    async def stop(self, timeout: float) -> bool:
        """Stop accepting, close idle connections, wait for in-flight requests to finish.

        Returns True when every connection closed within ``timeout``.
        """
        assert self._server is not None and self._closed is not None
        self._server.close()  # no new connections; accepted ones carry on
        self.draining = True  # from now on every response says "Connection: close"
        log_event(event="draining", connections=len(self._connections))
        for conn in list(self._connections):
            if conn.idle:
                conn.close()
        if not self._connections:
            self._closed.set()
        try:
            await asyncio.wait_for(self._closed.wait(), timeout)
            drained = True
        except TimeoutError:
            drained = False
            for conn in list(self._connections):
                conn.close(abort=True)
        if self._sweeper is not None:
            self._sweeper.cancel()
        return drained

    def _sweep(self) -> None:
        """End connections that are silent, stuck or too slow (see ``HttpConnection.expire``)."""
        now = time.monotonic()
        for conn in list(self._connections):
            conn.expire(now)
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL_S, self._sweep)

    def register(self, conn: HttpConnection) -> None:
        self._connections.add(conn)

    def unregister(self, conn: HttpConnection) -> None:
        self._connections.discard(conn)
        if self.draining and not self._connections and self._closed is not None:
            self._closed.set()


class Owner(Protocol):
    """What a connection needs from the server that accepted it."""

    draining: bool
    max_body_bytes: int

    def register(self, conn: HttpConnection) -> None: ...
    def unregister(self, conn: HttpConnection) -> None: ...
    def handle(self, request: Request, conn: HttpConnection) -> None: ...
    def record(self, request: Request, status: int, remote: str) -> None: ...


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection: parse requests, hand them to the owner, write the answers."""

    def __init__(self, owner: Owner) -> None:
        self._owner = owner
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._head: Request | None = None  # request whose head is parsed, body not complete
        self._head_size = 0
        self._body_size = 0
        self._continue_sent = False
        self.request: Request | None = None  # handed to the owner, not answered yet
        self._in_process = False
        self._closing = False
        self._peer_eof = False
        self._reading_paused = False
        self._writing_paused = False
        self._linger: asyncio.TimerHandle | None = None
        self.remote = ""
        self.last_active = time.monotonic()  # last byte read or written
        self.partial_since: float | None = None  # first byte of a request not yet complete

    # -- asyncio callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if peer else ""
        self._owner.register(self)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self._closing:
            return  # lingering after a closing response: drop what still arrives
        if not self._buffer and self.partial_since is None:
            self.partial_since = self.last_active
        self._buffer += data
        self._continue()

    def eof_received(self) -> bool:
        self._peer_eof = True
        if self._closing:
            return False
        self._continue()  # a half-closed client still gets the answers to every complete request
        return True  # the connection closes itself once they are written

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._linger is not None:
            self._linger.cancel()
        if self._head is not None:  # gone mid-request: counted as nginx's 499, never sent
            self._owner.record(self._head, 499, self.remote)
            self._head = None
        self._owner.unregister(self)

    def pause_writing(self) -> None:  # the client does not read its answers: stop reading
        self._writing_paused = True
        self._flow()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self.last_active = time.monotonic()
        self._continue()

    def _continue(self) -> None:
        """Go on after data arrived, an answer was written, or the client read its answers."""
        transport = self._transport
        if self._in_process or transport is None or self._closing:
            return  # (inside the parsing loop, the loop goes on by itself)
        if self.request is None and self._buffer:
            self._process()
        if self._peer_eof and self.request is None and not self._writing_paused and not self._closing:
            # Every complete request is answered and nothing more will come.
            if self._head is not None:  # it hung up mid-request: nobody to answer
                self._owner.record(self._head, 499, self.remote)
                self._head = None
            self._close_after_write(transport)
            return
        self._flow()

    def _flow(self) -> None:
        """Read only while answers leave and the client is not far ahead of them."""
        transport = self._transport
        if transport is None or self._closing:
            return
        ahead = self.request is not None and len(self._buffer) > self._owner.max_body_bytes + MAX_HEAD
        if self._writing_paused or ahead:
            if not self._reading_paused:
                self._reading_paused = True
                transport.pause_reading()
        elif self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    # -- state the server asks about --

    @property
    def idle(self) -> bool:
        """No request in progress: nothing received since the last answer."""
        return self.request is None and self._head is None and not self._buffer

    def close(self, abort: bool = False) -> None:
        """Close: idle connections at shutdown; with ``abort``, drop answers not yet sent too
        (a client that stopped reading must not hold the server's memory)."""
        if self._transport is not None:
            if abort:
                self._transport.abort()
            else:
                self._transport.close()

    def expire(self, now: float) -> None:
        """Called periodically: end a connection that is silent, stuck or too slow."""
        if self._transport is None or self.request is not None:
            return  # an answer is being computed
        if self.partial_since is not None and now - self.partial_since > REQUEST_TIMEOUT_S and not self._closing:
            self._fail(self._head or Request("", ""), 408,
                       f"the request was not complete within {REQUEST_TIMEOUT_S:g} s")
        elif now - self.last_active > IDLE_TIMEOUT_S:
            self.close(abort=True)

    # -- parsing --

    def _process(self) -> None:
        """Parse and dispatch every complete request in the buffer, one at a time."""
        if self._in_process:
            return
        self._in_process = True
        try:
            while (
                self.request is None and not self._closing and self._transport is not None
                and not self._writing_paused
            ):
                if not self._buffer:
                    self.partial_since = None
                    return
                if self._head is None and not self._parse_head():
                    return
                head = self._head
                assert head is not None
                end = self._head_size + self._body_size
                if len(self._buffer) < end:
                    if (
                        not self._continue_sent and head.version == "HTTP/1.1"
                        and head.headers.get("expect").lower() == "100-continue"
                    ):
                        self._continue_sent = True  # the checks passed: tell the client to send
                        self._transport.write(_CONTINUE)
                    return
                head.body = bytes(self._buffer[self._head_size:end])
                del self._buffer[:end]
                self._head = None
                self.request = head
                self.partial_since = time.monotonic() if self._buffer else None
                self._owner.handle(head, self)
        finally:
            self._in_process = False

    def _parse_head(self) -> bool:
        """Parse the request line and headers into ``self._head``; False when not complete."""
        buffer = self._buffer
        while buffer[:1] == b"\n" or buffer[:2] == b"\r\n":  # stray CRLFs between requests
            del buffer[: 1 if buffer[:1] == b"\n" else 2]
        ends = [i for i in (buffer.find(b"\n\r\n"), buffer.find(b"\n\n")) if i >= 0]
        if not ends:
            if len(buffer) - (buffer.rfind(b"\n") + 1) > MAX_LINE:
                self._fail(Request("", ""), 431, f"a header line is longer than {MAX_LINE} bytes")
            elif buffer.count(b"\n") > MAX_HEADERS:
                self._fail(Request("", ""), 431, f"more than {MAX_HEADERS} header lines")
            elif len(buffer) > MAX_HEAD:
                self._fail(Request("", ""), 431, f"the request head is longer than {MAX_HEAD} bytes")
            return False
        end = min(ends)
        if end > MAX_HEAD:
            return self._fail(Request("", ""), 431, f"the request head is longer than {MAX_HEAD} bytes")
        self._head_size = end + (3 if buffer[end + 1:end + 2] == b"\r" else 2)
        lines = bytes(buffer[:end]).split(b"\n")
        line = lines[0].rstrip(b"\r").decode("latin-1")
        request = Request("", "")
        words = line.split(" ")  # exactly one space between the three parts (RFC 9112 3)
        if len(words) != 3 or not _TOKEN.fullmatch(words[0]) or not words[1] or _CONTROL.search(line):
            return self._fail(request, 400, f"malformed request line {_show(line)}")
        request.method, request.target, version = words
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            return self._fail(request, 505, f"{_show(version)} is not supported; use HTTP/1.1")
        request.version = version
        if len(lines) - 1 > MAX_HEADERS:
            return self._fail(request, 431, f"more than {MAX_HEADERS} header lines")
        headers = request.headers
        for raw in lines[1:]:
            if len(raw) > MAX_LINE:
                return self._fail(request, 431, f"a header line is longer than {MAX_LINE} bytes")
            name, colon, value = raw.rstrip(b"\r").decode("latin-1").partition(":")
            # Obsolete line folding and spaces before the colon are rejected (RFC 9112 5.1, 5.2).
            if not colon or not _TOKEN.fullmatch(name) or _CONTROL.search(value):
                return self._fail(request, 400, f"malformed header line {_show(name + colon + value)}")
            headers.add(name, value.strip(" \t"))
        if request.method not in KNOWN_METHODS:
            return self._fail(request, 501, f"Unsupported method ({request.method!r})")
        tokens = {token.strip() for token in headers.get("connection").lower().split(",")}
        request.keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        try:
            self._body_size = self._body_length(request)
        except ClientError as exc:
            return self._fail(request, exc.status, exc.message)
        self._head = request
        self._continue_sent = False
        return True

    def _body_length(self, request: Request) -> int:
        """The body's length from Content-Length, checked before any of the body is awaited."""
        headers = request.headers
        if "transfer-encoding" in headers:
            raise ClientError(411, "chunked transfer encoding is not supported; send a Content-Length header")
        values = [v.strip() for v in headers.get_all("content-length")]
        if not values:
            if request.method in _BODY_METHODS:
                raise ClientError(411, f"a Content-Length header is required for {request.method}")
            return 0
        if len(set(values)) != 1 or not (values[0].isascii() and values[0].isdigit()):
            raise ClientError(400, f"Content-Length must be one non-negative integer, got {_show(values)}")
        length = int(values[0])
        limit = self._owner.max_body_bytes
        if length > limit:
            raise ClientError(413, f"the request body is {length} bytes; the limit is {limit} (max_body_bytes)")
        return length

    def _fail(self, request: Request, status: int, message: str) -> bool:
        """Answer a request that cannot be parsed or framed, then close: the stream is out of sync."""
        self.request = request
        self.respond(request, status, error_body(message), close=True)
        return False

    # -- answering --

    def send(self, request: Request, response: Response, close: bool = False) -> None:
        """Write ``response`` as the answer to ``request``."""
        self.respond(request, response.status, response.body, response.headers, response.content_type, close)

    def respond(
        self,
        request: Request,
        status: int,
        body: bytes,
        headers: tuple[tuple[str, str], ...] = (),
        content_type: bytes = JSON,
        close: bool = False,
    ) -> None:
        """Write the answer to ``request`` (one write), record it, go on with the next request."""
        if request is not self.request:
            return  # already answered
        self.request = None
        transport = self._transport
        if transport is None:  # the client left while its request was being served
            self._owner.record(request, 499, self.remote)
            return
        close = close or not request.keep_alive or self._owner.draining
        parts = [
            _STATUS_LINES[status], b"Content-Type: ", content_type, b"\r\nContent-Length: ",
            str(len(body)).encode(), b"\r\n", date_header(),
        ]
        parts.extend(f"{key}: {value}\r\n".encode("latin-1") for key, value in headers)
        if close:
            parts.append(b"Connection: close\r\n")
        elif request.version == "HTTP/1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if request.method != "HEAD":
            parts.append(body)
        transport.write(b"".join(parts))
        self.last_active = time.monotonic()
        self._owner.record(request, status, self.remote)
        if close:
            self._close_after_write(transport)
            return
        self._continue()

    def _close_after_write(self, transport: asyncio.Transport) -> None:
        self._closing = True
        self._head = None
        self.partial_since = None
        self._buffer.clear()
        if self._peer_eof or not transport.can_write_eof():
            transport.close()  # flushes what is buffered, then closes
            return
        transport.write_eof()  # FIN after the response; the client's FIN then closes the socket
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()  # to see the client's FIN; what it sends is dropped
        self._linger = asyncio.get_running_loop().call_later(LINGER_S, self._end_linger)

    def _end_linger(self) -> None:
        """Abort once the answer has left (or nothing could be written for ``LINGER_MAX_S``)."""
        transport = self._transport
        if transport is None:
            return
        unsent = transport.get_write_buffer_size()
        if unsent and time.monotonic() - self.last_active < LINGER_MAX_S:
            self._linger = asyncio.get_running_loop().call_later(LINGER_S, self._end_linger)
            return
        transport.abort()


_date: list[tuple[int, bytes]] = [(0, b"")]


def date_header() -> bytes:
    """The ``Date`` header line, formatted once per second."""
    now = int(time.time())
    second, line = _date[0]
    if second != now:
        line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
        _date[0] = (now, line)
    return line

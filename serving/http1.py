"""One HTTP/1.1 connection on the event loop: llhttp (through httptools) parses, this module frames, limits and answers.

httptools hands over the parts of each request as llhttp finds them; what a server does around
a parser is written here, because no well-kept library offers it short of a whole framework
(whose per-request tasks and ASGI dictionaries would come on top of our own work): answers to
pipelined requests in order, backpressure (no reading while answers cannot leave), timeouts
(408 for a request not complete in time, idle connections closed), a lingering close, the checks
before any body is awaited (413 from ``Content-Length``, 100 Continue only after them), and caps
on heads (431), connections and request bytes held across connections (503 with
``Retry-After``). Every refusal is a JSON error naming the part of the request and the fix.

llhttp runs in its strict mode: it refuses bare CR, bytes that do not belong in a request line
or header, conflicting ``Content-Length`` headers, and anything that could frame a request
differently from a proxy in front. Chunked request bodies are decoded by llhttp and held to the
same body cap; compressed bodies (``Content-Encoding``) get 415. Upgrade, CONNECT, HTTP/0.9 and
HTTP/2 (also the prior-knowledge preface) are refused.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections import deque
from email.utils import formatdate
from http import HTTPStatus
from typing import Protocol

import httptools

from serving.errors import ClientError, error_body, show
from serving.messages import JSON, Headers, Request, Response


class HttpServer(Protocol):
    """What a connection needs of the server that accepted it (``serving.listener.HttpServer``):
    the shared caps it counts against. A Protocol, so this module never imports the listener."""

    buffered: int
    unsent: int
    draining: bool
    max_connections: int
    max_header_bytes: int

    def register(self, conn: HttpConnection) -> bool: ...
    def unregister(self, conn: HttpConnection) -> None: ...


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# After a response that closes the connection: send FIN, keep reading (and dropping) what the
# client still sends for this long once the answer is out, so it is not lost to a TCP reset.
LINGER_S = 2.0
LINGER_MAX_S = 60.0  # ... but no longer than this after the last write, if the answer cannot leave
_RETRY = (("Retry-After", "1"),)
# Bytes parsed at a time: a head that starts anywhere in a read is measured to within this.
FEED_SLICE = 16 * 1024


class App(Protocol):
    """What the front end calls for every request (``serving.app.App``)."""

    def handle(self, request: Request, conn: HttpConnection) -> None: ...
    def record(self, request: Request, status: int, remote: str) -> None: ...


class _Refusal:
    """A request that cannot be served, answered in its turn and then the connection closes."""

    __slots__ = ("request", "error")

    def __init__(self, request: Request, error: ClientError) -> None:
        self.request = request
        self.error = error


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection: parse requests, hand them to the app in order, write the answers."""

    def __init__(self, server: HttpServer) -> None:
        self._server = server
        self._app = server.app
        self._parser = httptools.HttpRequestParser(self)
        self._transport: asyncio.Transport | None = None
        self._pending: deque[Request | _Refusal] = deque()  # complete, waiting for their turn
        self.request: Request | None = None  # handed to the app, not answered yet
        # The message being parsed: its parts so far and the bytes it holds against the cap.
        self._parsing: Request | None = None
        self._in_head = False
        self._url: list[bytes] = []
        self._head_size = 0
        self._head_held = 0
        self._header_count = 0
        self._body: list[bytes] = []
        self._body_size = 0
        self._chunked = False
        self._held = 0
        self._expect_continue = False
        self._broken = False  # a refusal is queued: nothing after it is parsed
        self._error: ClientError | None = None  # raised by a parser callback, for data_received
        self._dispatching = False
        self._closing = False
        self._peer_eof = False
        self._reading_paused = False
        self._writing_paused = False
        self._linger: asyncio.TimerHandle | None = None
        self.remote = ""
        self.last_active = time.monotonic()  # last byte read or written
        self.partial_since: float | None = None  # first byte of a request not yet complete
        self._paused_since: float | None = None  # the client stopped reading its answers
        self._streaming: asyncio.Future[None] | None = None  # a streamed answer being written
        self._resumed: asyncio.Future[None] | None = None  # done when the client reads again
        self.unsent = 0  # answer bytes written but not yet taken by the socket (counted by the server)

    # -- asyncio callbacks --

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's is not an asyncio.Transport
        peer = transport.get_extra_info("peername")
        self.remote = str(peer[0]) if peer else ""
        if not self._server.register(self):  # over the cap, or shutting down: answer at once, then close
            self._broken = True
            request = self.request = Request("", "")
            message = (
                "the server is shutting down; retry shortly"
                if self._server.draining
                else f"the server has {self._server.max_connections} connections open (max_connections); retry shortly"
            )
            self.respond(request, 503, error_body(message), _RETRY, close=True)

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self._closing or self._broken:
            return  # lingering after a closing response, or after a refusal: drop what arrives
        if len(data) <= FEED_SLICE:
            self._feed(data)
        else:  # in slices, so a head (and its padding) is measured within a slice wherever it starts
            view = memoryview(data)
            for start in range(0, len(data), FEED_SLICE):
                self._feed(view[start : start + FEED_SLICE])
                if self._broken:
                    break
        self._continue()

    def _feed(self, data: bytes | memoryview) -> None:
        """Parse one slice; count the bytes of a head in progress (llhttp holds them) against the caps."""
        server = self._server
        in_head = self._in_head
        if in_head:
            self._head_held += len(data)
            server.buffered += len(data)
        elif self._parsing is None and self.partial_since is None:
            self.partial_since = self.last_active
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            error, self._error = self._error, None  # what our callback raised (httptools keeps no cause)
            self._refuse(error if error is not None else ClientError(400, _malformed(exc)))
            return
        except httptools.HttpParserUpgrade:
            self._refuse(_upgrade_refused())
            return
        except httptools.HttpParserInvalidMethodError:
            self._refuse(
                ClientError(
                    400,
                    "malformed request line or unknown method; send 'GET|HEAD|POST <target> HTTP/1.1' followed by CRLF",
                )
            )
            return
        except httptools.HttpParserError as exc:
            if str(exc).startswith("Pause on PRI"):  # the HTTP/2 prior-knowledge preface
                self._refuse(ClientError(505, "HTTP/2 is not supported here; send HTTP/1.1 requests"))
            else:
                self._refuse(ClientError(400, _malformed(exc)))
            return
        if not self._in_head:
            return
        if not in_head:  # a head began in this slice and goes on: the slice counts (at most FEED_SLICE too many)
            self._head_held += len(data)
            server.buffered += len(data)
        if self._head_held > 2 * server.max_header_bytes:
            # Padding llhttp keeps inside one field (spaces, an endless value) counts too.
            self._refuse(ClientError(431, _head_too_long(server.max_header_bytes)))
        elif server.buffered > server.max_buffered_bytes and not server.make_room(self, len(data)):
            self._refuse(_busy())

    def eof_received(self) -> bool:
        self._peer_eof = True
        if self._closing:
            return False
        self._continue()  # a half-closed client still gets the answers to every complete request
        return True  # the connection closes itself once they are written

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._streaming is not None:
            self._streaming.cancel()  # closes the answer's iterator (the client has gone)
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        if self._linger is not None:
            self._linger.cancel()
        if self._parsing is not None and not self._in_head:  # gone mid-body: nginx's 499, never sent
            self._app.record(self._parsing, 499, self.remote)
        self._drop_parsing()
        while self._pending:
            item = self._pending.popleft()
            request = item.request if isinstance(item, _Refusal) else item
            self._server.buffered -= request.held
            request.held = 0
        self._server.unsent -= self.unsent
        self.unsent = 0
        self._server.unregister(self)

    def pause_writing(self) -> None:  # the client does not read its answers: stop reading
        self._writing_paused = True
        self._paused_since = time.monotonic()
        self._flow()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._paused_since = None
        if self._resumed is not None and not self._resumed.done():
            self._resumed.set_result(None)
        self.last_active = time.monotonic()
        self.count_unsent()
        self._continue()

    # -- llhttp callbacks (httptools calls them from feed_data) --

    def on_message_begin(self) -> None:
        self._parsing = Request("", "")
        self._in_head = True
        self._url = []
        self._head_size = self._header_count = self._body_size = 0
        self._body = []
        self._chunked = self._expect_continue = False
        if self.partial_since is None:
            self.partial_since = time.monotonic()

    def on_url(self, url: bytes) -> None:
        self._url.append(url)
        self._head_size += len(url)
        if self._head_size > self._server.max_header_bytes:
            raise self._stop(ClientError(431, _head_too_long(self._server.max_header_bytes)))

    def on_header(self, name: bytes, value: bytes) -> None:
        count = self._header_count = self._header_count + 1
        size = self._head_size = self._head_size + len(name) + len(value) + 4
        server = self._server
        if count > server.max_headers:
            raise self._stop(
                ClientError(
                    431, f"the request has more than {server.max_headers} header fields (max_headers); send fewer"
                )
            )
        if size > server.max_header_bytes:
            raise self._stop(ClientError(431, _head_too_long(server.max_header_bytes)))
        key = name.decode("latin-1").lower()
        values = self._parsing.headers.values  # type: ignore[union-attr]
        same = values.get(key)
        if same is None:
            values[key] = [value.decode("latin-1")]
        else:
            same.append(value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        try:
            self._check_head()
        except ClientError as exc:
            raise self._stop(exc) from None

    def _stop(self, error: ClientError) -> ClientError:
        """Keep a callback's error for ``data_received`` (httptools raises its own in its place)."""
        self._error = error
        return error

    def _check_head(self) -> None:
        """The checks made once the head is complete, before any of the body is awaited."""
        request = self._parsing
        assert request is not None
        server = self._server
        if self._head_held > 2 * server.max_header_bytes:  # padding, measured within FEED_SLICE
            raise ClientError(431, _head_too_long(server.max_header_bytes))
        server.buffered -= self._head_held
        self._head_held = 0
        self._in_head = False
        parser = self._parser
        url = self._url
        request.target = (url[0] if len(url) == 1 else b"".join(url)).decode("latin-1")
        request.method = method = parser.get_method().decode("latin-1")
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise ClientError(505, f"HTTP/{version} is not supported; send HTTP/1.1 requests")
        request.version = "HTTP/" + version
        # (llhttp refuses spaces, tabs, controls and bytes >= 0x80 in the target itself.)
        if method not in KNOWN_METHODS:
            raise ClientError(501, f"Unsupported method ({method!r}); use GET, HEAD or POST")
        headers = request.headers
        values = headers.values
        hosts = values.get("host", ())
        if len(hosts) != 1 and (hosts or version == "1.1"):
            raise ClientError(400, f"an HTTP/1.1 request needs exactly one Host header, got {len(hosts)}")
        if "upgrade" in values:
            raise _upgrade_refused()
        # llhttp reads every Connection header: any "close" token wins over keep-alive.
        request.keep_alive = parser.should_keep_alive()
        length = 0
        if "transfer-encoding" in values:
            codings = _codings(headers, "transfer-encoding")
            if codings != ["chunked"]:  # llhttp checked that chunked comes last
                raise ClientError(
                    501,
                    f"Transfer-Encoding {show(', '.join(codings))} is not supported; "
                    "send the body as is, with Content-Length or chunked only",
                )
            self._chunked = True
        elif "content-length" in values:
            length = int(values["content-length"][0])  # llhttp checked: one value, digits only
            if length > server.max_body_bytes:
                raise ClientError(
                    413, f"the request body is {length} bytes; the limit is {server.max_body_bytes} (max_body_bytes)"
                )
        elif request.method in _BODY_METHODS:
            raise ClientError(
                411, f"a Content-Length header (or chunked transfer encoding) is required for {request.method}"
            )
        if "content-encoding" in values:  # a compressed body would reach the decoders as it is
            codings = _codings(headers, "content-encoding")
            if any(c not in ("identity", "") for c in codings):
                raise ClientError(
                    415,
                    f"Content-Encoding {show(', '.join(codings))} is not supported; "
                    "send the body uncompressed, without Content-Encoding",
                )
        # The body's bytes are counted as they arrive (on_body), never as declared: a declared
        # length costs the server nothing until it is sent.
        self._expect_continue = (
            "expect" in values
            and version == "1.1"
            and (length > 0 or self._chunked)
            and headers.get("expect").lower() == "100-continue"
        )

    def on_body(self, body: bytes) -> None:
        self._body.append(body)
        size = len(body)
        self._body_size += size
        server = self._server
        if self._chunked and self._body_size > server.max_body_bytes:
            raise self._stop(
                ClientError(413, f"the chunked request body is over {server.max_body_bytes} bytes (max_body_bytes)")
            )
        server.buffered += size
        self._held += size
        if server.buffered > server.max_buffered_bytes and not server.make_room(self, size):
            raise self._stop(_busy())

    def on_message_complete(self) -> None:
        request = self._parsing
        assert request is not None
        body = self._body
        request.body = body[0] if len(body) == 1 else b"".join(body)
        request.held = self._held
        self._held = 0
        self._body = []
        self._parsing = None
        self.partial_since = None
        self._pending.append(request)

    # -- going on --

    def _continue(self) -> None:
        """Go on after data arrived, an answer was written, or the client read its answers."""
        transport = self._transport
        if self._dispatching or transport is None or self._closing:
            return  # (inside the dispatch loop, the loop goes on by itself)
        if not (
            self._pending or self._reading_paused or self._writing_paused or self._peer_eof or self._expect_continue
        ):
            return  # nothing waits, nothing is paused or owed: reading goes on as it was
        self._dispatching = True
        try:
            while (
                self.request is None
                and self._pending
                and not self._writing_paused
                and not self._closing
                and self._transport is not None
            ):
                item = self._pending.popleft()
                if isinstance(item, _Refusal):
                    error = item.error
                    self.request = item.request
                    self.respond(item.request, error.status, error_body(error.message), error.headers, close=True)
                else:
                    self.request = item
                    self._app.handle(item, self)
            if (
                self._expect_continue
                and self.request is None
                and not self._pending
                and self._parsing is not None
                and not self._in_head
                and not self._closing
            ):
                self._expect_continue = False  # its turn, and the checks passed: ask for the body
                transport.write(_CONTINUE)
        finally:
            self._dispatching = False
        if (
            self._peer_eof
            and self.request is None
            and not self._pending
            and not self._writing_paused
            and not self._closing
        ):
            # Every complete request is answered and nothing more will come.
            if self._parsing is not None and not self._in_head:  # hung up mid-request: nobody to answer
                self._app.record(self._parsing, 499, self.remote)
            self._close_after_write(transport)
            return
        self._flow()

    def _flow(self) -> None:
        """Read only while answers leave and no complete request waits for its turn."""
        transport = self._transport
        if transport is None or self._closing:
            return
        if self._writing_paused or (self.request is not None and self._pending):
            if not self._reading_paused:
                self._reading_paused = True
                transport.pause_reading()
        elif self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def _refuse(self, error: ClientError) -> None:
        """Queue the answer to a request that cannot be parsed or served; then the connection closes."""
        request = self._parsing or Request("", "")
        self._drop_parsing()
        self._broken = True
        self._pending.append(_Refusal(request, error))

    def _drop_parsing(self) -> None:
        """Give back what the message being parsed holds against the buffer cap."""
        self._server.buffered -= self._held + self._head_held
        self._held = self._head_held = 0
        self._parsing = None
        self._in_head = False
        self._body = []

    # -- state the server asks about --

    @property
    def holding(self) -> int:
        """Request bytes of the message being read: what a cut gives back (``serving.shares``)."""
        return self._held + self._head_held

    def cut(self) -> None:
        """Refuse the message being read with 503: a connection within its share needs its bytes."""
        if self._parsing is not None and not self._broken and not self._closing:
            self._refuse(_busy())
            self._continue()

    def count_unsent(self) -> None:
        """Count the answer bytes the socket has not taken yet against the server's cap on them."""
        transport = self._transport
        now = transport.get_write_buffer_size() if transport is not None else 0
        server = self._server
        server.unsent += now - self.unsent
        self.unsent = now
        if now and server.unsent > server.max_unsent_bytes:
            server.trim_unsent(self)

    @property
    def idle(self) -> bool:
        """No request in progress: nothing received since the last answer, no answer still streaming."""
        return self.request is None and self._parsing is None and not self._pending and self._streaming is None

    def close(self, abort: bool = False) -> None:
        """Close: idle connections at shutdown; with ``abort``, drop answers not yet sent too
        (a client that stopped reading must not hold the server's memory)."""
        if self._transport is not None:
            if abort:
                self._closing = True  # nothing more is answered or read
                self._server.unsent -= self.unsent  # dropped now, not when the loop gets to it
                self.unsent = 0
                _reset_on_close(self._transport)
                self._transport.abort()
            else:
                self._transport.close()

    def expire(self, now: float) -> None:
        """Called periodically: end a connection that is silent, stuck or too slow."""
        if self._transport is None:
            return
        server = self._server
        if self._paused_since is not None:
            # The client has not read its answers for this long: whatever else is queued or being
            # computed for it, its connection ends (nothing it will not read is kept for it).
            if now - self._paused_since > server.idle_timeout_s:
                self.close(abort=True)
            return
        if self.request is not None or self._pending:
            return  # an answer is being computed
        if (
            self.partial_since is not None
            and now - self.partial_since > server.request_timeout_s
            and not self._closing
            and not self._broken
        ):
            self._refuse(
                ClientError(
                    408, f"the request was not complete within {server.request_timeout_s:g} s (request_timeout_s)"
                )
            )
            self._continue()
        elif now - self.last_active > server.idle_timeout_s:
            self.close(abort=True)

    # -- answering --

    def send(self, request: Request, response: Response, close: bool = False) -> None:
        """Write ``response`` as the answer to ``request``."""
        if response.stream is not None:
            self._streaming = asyncio.ensure_future(self._send_stream(request, response, close))
            return
        self.respond(request, response.status, response.body, response.headers, response.content_type, close)

    async def _send_stream(self, request: Request, response: Response, close: bool) -> None:
        """Write a streamed answer: the head, then each chunk as the iterator yields it (chunked
        encoding; an HTTP/1.0 client gets the bytes as they are and the connection closes after
        them), waiting while the client does not read. Every chunk counts as unsent until the
        socket takes it. The connection's next request waits for the end; a client that goes
        away cancels this, which closes the iterator."""
        stream = response.stream
        assert stream is not None
        chunked = request.version == "HTTP/1.1"
        close = close or not chunked or not request.keep_alive or self._server.draining
        status = response.status
        try:
            transport = self._transport
            if transport is None or request is not self.request:
                return
            headers = (*response.headers, ("Transfer-Encoding", "chunked")) if chunked else response.headers
            transport.write(self._head_bytes(request, status, b"", headers, response.content_type, close, length=False))
            if request.method != "HEAD":
                async for chunk in stream:
                    if not chunk:
                        continue
                    while self._writing_paused and self._transport is not None:
                        await self._writable()
                    transport = self._transport
                    if transport is None:
                        return
                    transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                    self.last_active = time.monotonic()
                    self.count_unsent()
                if chunked and self._transport is not None:
                    self._transport.write(b"0\r\n\r\n")
        except asyncio.CancelledError:
            status = 499
        finally:
            self._streaming = None
            closing = getattr(stream, "aclose", None)
            if closing is not None:
                await closing()
        self._finish_stream(request, status, close)

    def _finish_stream(self, request: Request, status: int, close: bool) -> None:
        if request is not self.request:
            return
        self.request = None
        self._server.buffered -= request.held
        request.held = 0
        transport = self._transport
        self._app.record(request, status if transport is not None else 499, self.remote)
        if transport is None or self._closing:
            return
        if close or self._server.draining:  # a drain that began while the answer streamed ends it here
            self._close_after_write(transport)
            return
        self._continue()

    def _writable(self) -> asyncio.Future[None]:
        """A future done once the client reads again (or the connection ends)."""
        if self._resumed is None or self._resumed.done():
            self._resumed = asyncio.get_running_loop().create_future()
        return self._resumed

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
        self._server.buffered -= request.held
        request.held = 0
        transport = self._transport
        if transport is None:  # the client left while its request was being served
            self._app.record(request, 499, self.remote)
            return
        close = close or not request.keep_alive or self._server.draining or (self._broken and not self._pending)
        head = self._head_bytes(request, status, body, headers, content_type, close)
        transport.write(head if request.method == "HEAD" else head + body)
        self.last_active = time.monotonic()
        self.count_unsent()
        self._app.record(request, status, self.remote)
        if self._closing:  # cut by count_unsent: over its share of unread answers
            return
        if close:
            self._close_after_write(transport)
            return
        self._continue()

    @staticmethod
    def _head_bytes(
        request: Request,
        status: int,
        body: bytes,
        headers: tuple[tuple[str, str], ...],
        content_type: bytes,
        close: bool,
        length: bool = True,
    ) -> bytes:
        extra = b"".join(f"{key}: {value}\r\n".encode("latin-1") for key, value in headers) if headers else b""
        if close:
            extra += b"Connection: close\r\n"
        elif request.version == "HTTP/1.0":
            extra += b"Connection: keep-alive\r\n"
        size = b"Content-Length: %d\r\n" % len(body) if length else b""
        return b"%sContent-Type: %s\r\n%s%s%s\r\n" % (
            _STATUS_LINES[status],
            content_type,
            size,
            date_header(),
            extra,
        )

    def _close_after_write(self, transport: asyncio.Transport) -> None:
        self._closing = True
        self._drop_parsing()
        self.partial_since = None
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


def _reset_on_close(transport: asyncio.BaseTransport) -> None:
    """Make closing the socket send a reset and drop what the kernel still holds for the client
    (SO_LINGER 0): an aborted client's unread answers must not stay in kernel memory either."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass


def _codings(headers: Headers, name: str) -> list[str]:
    """The comma-separated tokens of every ``name`` header, lowercased, in order."""
    return [c.strip().lower() for v in headers.get_all(name) for c in v.split(",")]


def _malformed(exc: Exception) -> str:
    reason = str(exc) or type(exc).__name__
    return f"malformed request: {reason}; send a valid HTTP/1.1 request (RFC 9112)"


def _head_too_long(limit: int) -> str:
    return (
        f"the request line and headers are longer than {limit} bytes (max_header_bytes); "
        "send a shorter target or fewer/shorter headers"
    )


def _busy() -> ClientError:
    return ClientError(
        503,
        "the server holds too many request bytes right now (max_buffered_bytes); retry shortly",
        close=True,
        headers=_RETRY,
    )


def _upgrade_refused() -> ClientError:
    return ClientError(
        400, "protocol upgrades are not supported (Upgrade header or CONNECT); send plain HTTP/1.1 requests"
    )


_date: list[tuple[int, bytes]] = [(0, b"")]


def date_header() -> bytes:
    """The ``Date`` header line, formatted once per second."""
    now = int(time.time())
    second, line = _date[0]
    if second != now:
        line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
        _date[0] = (now, line)
    return line

"""The listening socket: accepts connections, holds the caps they share, sweeps their timeouts, drains on shutdown."""

from __future__ import annotations

import asyncio
import ctypes
import resource
import socket
import time
from typing import Any

from serving.config import ServingConfig
from serving.http1 import App, HttpConnection
from serving.logs import log_event
from serving.shares import make_room

# How often connections are checked for their timeouts.
SWEEP_INTERVAL_S = 1.0
# Accept errors (e.g. EMFILE) are logged at most once per this many seconds, with a count.
ACCEPT_ERROR_LOG_S = 5.0
# Freed memory is handed back to the OS at most this often (see MemoryTrim).
TRIM_INTERVAL_S = 2.0


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit (each connection is a file); return both."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # e.g. an unlimited hard limit the kernel caps lower
            pass
    return soft, hard


# glibc's mallopt parameter, and the size from which blocks are mapped on their own.
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 256 * 1024


class MemoryTrim:
    """Hand freed heap pages back to the OS (glibc's ``malloc_trim``) while the process is a quarter
    above the size it last came back to (or needed), at most every ``TRIM_INTERVAL_S``: freed small blocks
    (HTTP/2 frames, parsed messages) otherwise stay in glibc's arenas after a burst, and the
    replica's memory never comes back down."""

    def __init__(self) -> None:
        self._trim: Any = None
        self._page = resource.getpagesize()
        try:
            self._trim = ctypes.CDLL(None).malloc_trim
        except (OSError, AttributeError):  # not glibc
            pass
        self._floor = self.rss()
        self._last = 0.0

    def rss(self) -> int:
        try:
            with open("/proc/self/statm", "rb") as statm:
                return int(statm.read().split()[1]) * self._page
        except (OSError, ValueError, AttributeError):
            return 0

    def maybe_trim(self, now: float) -> None:
        if self._trim is None or now - self._last < TRIM_INTERVAL_S:
            return
        before = self.rss()
        if before > self._floor * 5 // 4:
            self._last = now
            self._trim(0)
            after = self.rss()
            # Little came back: that much is in use (a model loaded), the new floor.
            self._floor = after if after > before * 19 // 20 else min(self._floor, after)


def return_freed_memory() -> bool:
    """Make large blocks (bodies, answers, echoed ids) go back to the OS when they are freed.

    glibc maps a block of 128 KiB or more on its own, but after freeing one it raises that
    threshold (up to 32 MiB) and from then on keeps such blocks in its heap once freed: after a
    burst of 4 MB requests the server stayed ~60 MiB above its baseline (benchmarks/
    hostile_bench.py). A fixed threshold turns that off, for Python and the gRPC transport alike.
    False when the C library is not glibc.
    """
    try:
        return bool(ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    except (OSError, AttributeError):
        return False


class HttpServer:
    """The listening socket, its connections, and the caps shared by all of them."""

    def __init__(self, address: tuple[str, int], app: App, config: ServingConfig) -> None:
        self.app = app
        self.draining = False
        self.max_body_bytes = config.max_body_bytes
        self.max_buffered_bytes = config.max_buffered_bytes
        self.max_header_bytes = config.max_header_bytes
        self.max_headers = config.max_headers
        self.max_connections = config.max_connections
        self.request_timeout_s = config.request_timeout_s
        self.idle_timeout_s = config.idle_timeout_s
        self.buffered = 0  # request bytes held across connections (heads and bodies, as they arrive)
        # Answer bytes written and not yet taken by the sockets of clients that do not read: a cap
        # of the same size (every such answer is first held whole in memory).
        self.max_unsent_bytes = config.max_buffered_bytes
        self.unsent = 0
        self._connections: set[HttpConnection] = set()
        self._closed: asyncio.Event | None = None
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._accept_errors = 0
        self._accept_logged = 0.0
        self._memory = MemoryTrim()
        # Bound now, so a taken port fails before anything else starts and port 0 is known.
        self.socket = socket.create_server(address, backlog=1024, reuse_port=False)
        self.address: tuple[str, int] = self.socket.getsockname()[:2]

    @property
    def connections(self) -> int:
        return len(self._connections)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._default_handler = loop.get_exception_handler()
        loop.set_exception_handler(self._loop_error)
        self._closed = asyncio.Event()
        self._server = await loop.create_server(lambda: HttpConnection(self), sock=self.socket, backlog=1024)
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
            conn.count_unsent()  # answers that left since they were counted
        self._memory.maybe_trim(now)
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL_S, self._sweep)

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Accept errors (out of file descriptors, memory) come in bursts: log a bounded few."""
        error = context.get("exception")
        message = str(context.get("message", ""))
        if "accept" not in message.lower() and not (isinstance(error, OSError) and "accept" in repr(context)):
            if self._default_handler is not None:
                self._default_handler(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self._accept_errors += 1
        now = time.monotonic()
        if now - self._accept_logged >= ACCEPT_ERROR_LOG_S:
            log_event(
                event="accept_error",
                error=f"{message}: {error}",
                count=self._accept_errors,
                connections=len(self._connections),
            )
            self._accept_errors = 0
            self._accept_logged = now

    # -- what connections ask --

    def register(self, conn: HttpConnection) -> bool:
        """Track a new connection; False when the connection cap is reached."""
        if len(self._connections) >= self.max_connections or self.draining:
            return False
        self._connections.add(conn)
        return True

    def make_room(self, conn: HttpConnection, extra: int) -> bool:
        """Request bytes are over the cap after ``conn`` read ``extra`` more: cut the messages of
        connections holding more than it, largest first (each gets 503), if ``conn`` is within its
        share (``serving.shares``). False when ``conn`` is the one to give way."""
        others = ((c, c.holding) for c in self._connections if c is not conn)
        cut = make_room(
            self.max_buffered_bytes,
            self.buffered - extra,
            conn.holding - extra,
            extra,
            others,
            floor=self.max_body_bytes + 2 * self.max_header_bytes,
        )
        if cut is None:
            return False
        for victim in cut:
            victim.cut()
        return True

    def trim_unsent(self, conn: HttpConnection) -> None:
        """Unsent answer bytes are over the cap after a write to ``conn``: end the connections of the
        clients holding the most answers unread (``serving.shares``), or ``conn``'s when it is the
        one over its share."""
        others = ((c, c.unsent) for c in self._connections if c is not conn)
        cut = make_room(
            self.max_unsent_bytes, self.unsent - conn.unsent, 0, conn.unsent, others, floor=self.max_body_bytes
        )
        for victim in [conn] if cut is None else cut:
            victim.close(abort=True)

    def unregister(self, conn: HttpConnection) -> None:
        self._connections.discard(conn)
        if self.draining and not self._connections and self._closed is not None:
            self._closed.set()

"""JSON log lines on stderr: one per event, one per request, written in bulk by the event loop.

Access-log lines are kept as their fields (``write_request``) and formatted when the buffer is
written out: the formatting runs in bulk, off the path between a request and its answer.

Lines go to a buffer that a callback on the serving loop writes out every ``LOG_FLUSH_S``
without ever blocking: to a pipe or terminal it writes only what the pipe takes at once (a pipe
that reports room takes ``PIPE_BUF`` bytes without blocking) and keeps the rest for the next
turn. There is no writer thread: a thread that wakes to write takes the GIL from the loop, and
on a busy machine the loop then waits until that thread gets a CPU. Before the loop runs and at
exit (``flush_logs()``) lines are written directly.

Nothing a client sends reaches the log unbounded: a request target is cut to ``MAX_TARGET_CHARS``
and every text field of an event to ``MAX_FIELD_CHARS``, the cut shown (``...[+N chars]``). What
is waiting to be written is capped in lines and bytes; beyond, lines are dropped and counted
(a ``log_lines_dropped`` event, and ``modelstack_log_lines_dropped_total`` in ``/metrics``). While
the loop flushes, ``sys.stderr`` is a sink into this buffer, so a warning printed on the request
path (numpy's RuntimeWarning) never waits for a stalled log reader.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import select
import stat
import sys
import threading
import time
from typing import Any

LOG_FLUSH_S = 0.01
# Lines kept while stderr does not take them (a stalled log reader); beyond this they are
# counted and dropped rather than held in memory or allowed to block the server.
MAX_BUFFERED_LINES = 100_000
MAX_BUFFERED_BYTES = 8 * 1024 * 1024  # ... and this many bytes, formatted lines and taken-out bytes together
MAX_TARGET_CHARS = 256  # of a request target in an access-log line
MAX_FIELD_CHARS = 4096  # of any text field of an event (a traceback fits)
_ENTRY_BYTES = 160  # an access-log line without its target, for the byte count

_lock = threading.Lock()  # guards the buffer: lines may come from other threads
# An access-log entry, HTTP or gRPC: time, method, target, status, seconds, remote, gRPC code
# (None for HTTP); formatted at flush.
_Entry = tuple[float, str, str, int, float, str, "str | None"]
_buffer: list[str | _Entry] = []
_unsent = [b""]  # bytes of lines taken from the buffer that stderr has not taken yet
_dropped = [0]  # since the last log_lines_dropped event
_dropped_total = [0]  # since start, for /metrics
_buffered_bytes = [0]  # of the lines in _buffer (an estimate for entries)
_stderr: list[Any] = [None]  # the real stderr while sys.stderr is the sink
_loop: list[asyncio.AbstractEventLoop | None] = [None]
_second_stamp: tuple[int, str] = (-1, "")
_milli_stamp: tuple[int, str] = (-1, "")


def log_event(**fields: Any) -> None:
    """Write one JSON line ``{"ts": ..., **fields}`` (text fields cut to ``MAX_FIELD_CHARS``)."""
    for key, value in fields.items():
        if not isinstance(value, (int, float, bool, type(None))):
            fields[key] = cut(value if isinstance(value, str) else str(value), MAX_FIELD_CHARS)
    write_line(json.dumps({"ts": timestamp(), **fields}, separators=(",", ":"), default=str))


def cut(text: str, limit: int) -> str:
    """``text`` whole, or its first ``limit`` characters and how many more there were."""
    return text if len(text) <= limit else f"{text[:limit]}...[+{len(text) - limit} chars]"


def write_line(line: str | _Entry) -> None:
    """Buffer one already-formatted JSON line, or an access-log entry (written at once while no loop
    flushes them)."""
    size = len(line) if isinstance(line, str) else len(line[2]) + _ENTRY_BYTES
    with _lock:
        if len(_buffer) >= MAX_BUFFERED_LINES or _buffered_bytes[0] + len(_unsent[0]) + size > MAX_BUFFERED_BYTES:
            _dropped[0] += 1
            _dropped_total[0] += 1
            return
        _buffer.append(line)
        _buffered_bytes[0] += size
    if _loop[0] is None:
        flush_logs()


def write_request(
    method: str, target: str, status: int, seconds: float, remote: str, grpc_code: str | None = None
) -> None:
    """Buffer one access-log line, formatted when it is written out. A gRPC call gives its method
    as ``"gRPC"``, the RPC's path as the target and its status code's name."""
    if len(target) > MAX_TARGET_CHARS:
        target = cut(target, MAX_TARGET_CHARS)
    write_line((time.time(), method, target, status, seconds, remote, grpc_code))


def dropped_lines() -> int:
    """Log lines dropped since start because stderr did not take them in time."""
    return _dropped_total[0]


def _request_line(entry: str | _Entry) -> str:
    if isinstance(entry, str):
        return entry
    at, method, target, status, seconds, remote, grpc_code = entry
    # Methods, HTTP client addresses and code names are tokens; a target (visible ASCII) or a
    # gRPC peer needs escaping only with a quote or a backslash.
    code = f',"grpc_code":"{grpc_code}"' if grpc_code else ""
    return (
        f'{{"ts":"{timestamp(at)}","event":"request","method":"{method}","path":{_quoted(target)},'
        f'"status":{status}{code},"duration_ms":{seconds * 1000:.3f},"remote":{_quoted(remote)}}}'
    )


def _quoted(text: str) -> str:
    return json.dumps(text) if '"' in text or "\\" in text else f'"{text}"'


def flush_on(loop: asyncio.AbstractEventLoop) -> None:
    """From now on ``loop`` writes the buffered lines every ``LOG_FLUSH_S``, never blocking; what
    is printed to ``sys.stderr`` meanwhile goes through the buffer too."""
    _loop[0] = loop
    if _stderr[0] is None:
        _stderr[0] = sys.stderr
        sys.stderr = _StderrSink()

    def tick() -> None:
        if _loop[0] is loop and not loop.is_closed():
            _flush(block=False)
            loop.call_later(LOG_FLUSH_S, tick)

    loop.call_later(LOG_FLUSH_S, tick)


def stop_flushing() -> None:
    """Back to writing lines at once (the loop is ending), after writing what is buffered."""
    _loop[0] = None
    if _stderr[0] is not None:
        sys.stderr, _stderr[0] = _stderr[0], None
    flush_logs()


def flush_logs() -> None:
    """Write every buffered line now, waiting for stderr if need be."""
    _flush(block=True)


def _flush(block: bool) -> None:
    with _lock:
        # Lines leave the buffer only while the bytes stderr has not taken are few: a stalled
        # reader leaves them counted in the buffer (and its caps) instead of in ever more bytes.
        if block or len(_unsent[0]) <= _MAX_UNSENT_BYTES:
            lines = _buffer[:]
            _buffer.clear()
            _buffered_bytes[0] = 0
            dropped, _dropped[0] = _dropped[0], 0
        else:
            lines, dropped = [], 0
    if dropped:
        lines.append(json.dumps({"ts": timestamp(), "event": "log_lines_dropped", "count": dropped}))
    data = _unsent[0] + ("\n".join(map(_request_line, lines)) + "\n").encode() if lines else _unsent[0]
    if not data:
        return
    stderr = _stderr[0] or sys.stderr
    try:
        fd = stderr.fileno()
    except (AttributeError, OSError, ValueError):  # replaced (e.g. captured by a test runner)
        try:
            stderr.write(data.decode())
            stderr.flush()
        except (OSError, ValueError):
            pass
        _unsent[0] = b""
        return
    try:
        if block:
            stderr.flush()  # whatever was printed directly goes first
        _unsent[0] = data[_write(fd, data, block) :]
    except OSError:  # stderr closed: nothing useful left to do
        _unsent[0] = b""


_MAX_UNSENT_BYTES = 256 * 1024


class _StderrSink(io.TextIOBase):
    """``sys.stderr`` while the loop flushes: each line printed becomes a ``stderr`` event in the
    buffer (cut, capped, never waiting for the reader)."""

    def __init__(self) -> None:
        super().__init__()
        self._partial = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        if len(self._partial) > MAX_FIELD_CHARS:  # a line without an end is cut too
            lines.append(self._partial)
            self._partial = ""
        for line in lines:
            if line:
                log_event(event="stderr", text=line)
        return len(text)


def _write(fd: int, data: bytes, block: bool) -> int:
    """Write ``data`` to ``fd``; unless ``block``, only what it takes without waiting."""
    if block or stat.S_ISREG(os.fstat(fd).st_mode):  # a file never makes a writer wait long
        view, written = memoryview(data), 0
        while written < len(data):
            written += os.write(fd, view[written:])
        return written
    written = 0
    while written < len(data):
        if not select.select([], [fd], [], 0)[1]:
            break
        written += os.write(fd, data[written : written + select.PIPE_BUF])
    return written


def timestamp(now: float | None = None) -> str:
    """UTC ISO-8601 with milliseconds (of ``now``, default the current time). Access-log lines
    come many to a millisecond under load: each millisecond is formatted once, each second's
    date and time part once."""
    global _milli_stamp, _second_stamp
    if now is None:
        now = time.time()
    milli = int(now * 1000)
    last_milli, stamp = _milli_stamp
    if milli == last_milli:
        return stamp
    second, fraction = divmod(milli, 1000)
    last_second, date_time = _second_stamp
    if second != last_second:
        date_time = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        _second_stamp = (second, date_time)
    stamp = f"{date_time}.{fraction:03d}Z"
    _milli_stamp = (milli, stamp)
    return stamp

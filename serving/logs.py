"""JSON log lines on stderr: one per event, one per request, written in bulk.

The event loop must never block on stderr, so lines go to a buffer that a small thread writes out
every ``LOG_FLUSH_S`` (and ``flush_logs()`` at exit): lines from one interval leave in one write,
in order.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

LOG_FLUSH_S = 0.05
# Lines kept while stderr does not take them (a stalled log reader); beyond this they are
# counted and dropped rather than held in memory or allowed to block the server.
MAX_BUFFERED_LINES = 100_000

_lock = threading.Lock()  # guards the buffer only; never held while writing
_write_lock = threading.Lock()  # one writer at a time, so lines keep their order
_buffer: list[str] = []
_dropped = [0]
_flusher: list[threading.Thread | None] = [None]
_second_stamp: tuple[int, str] = (0, "")


def log_event(**fields: Any) -> None:
    """Write one JSON line ``{"ts": ..., **fields}``."""
    write_line(json.dumps({"ts": timestamp(), **fields}, separators=(",", ":"), default=str))


def write_line(line: str) -> None:
    """Buffer one already-formatted JSON line."""
    with _lock:
        if len(_buffer) >= MAX_BUFFERED_LINES:
            _dropped[0] += 1
            return
        _buffer.append(line)
        if _flusher[0] is None:
            thread = threading.Thread(target=_flush_forever, name="log-flusher", daemon=True)
            _flusher[0] = thread
            thread.start()


def _flush_forever() -> None:
    while True:
        time.sleep(LOG_FLUSH_S)
        flush_logs()


def flush_logs() -> None:
    """Write every buffered line now (the buffer is swapped out first: a slow stderr delays only
    this writer, never the threads adding lines)."""
    with _write_lock:
        with _lock:
            if not _buffer and not _dropped[0]:
                return
            lines = _buffer[:]
            _buffer.clear()
            dropped, _dropped[0] = _dropped[0], 0
        if dropped:
            lines.append(json.dumps({"ts": timestamp(), "event": "log_lines_dropped", "count": dropped}))
        try:
            sys.stderr.write("\n".join(lines) + "\n")
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed: nothing useful left to do
            pass


def timestamp() -> str:
    """UTC ISO-8601 with milliseconds; the seconds part is formatted once per second."""
    global _second_stamp
    now = time.time()
    second, stamp = _second_stamp
    if int(now) != second:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        _second_stamp = (int(now), stamp)
    return f"{stamp}.{int(now % 1 * 1000):03d}Z"

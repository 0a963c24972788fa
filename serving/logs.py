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

_lock = threading.Lock()
_buffer: list[str] = []
_flusher: list[threading.Thread | None] = [None]
_second_stamp: tuple[int, str] = (0, "")


def log_event(**fields: Any) -> None:
    """Write one JSON line ``{"ts": ..., **fields}``."""
    write_line(json.dumps({"ts": timestamp(), **fields}, separators=(",", ":"), default=str))


def write_line(line: str) -> None:
    """Buffer one already-formatted JSON line."""
    with _lock:
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
    """Write every buffered line now."""
    with _lock:
        if not _buffer:
            return
        text = "\n".join(_buffer) + "\n"
        _buffer.clear()
        try:
            sys.stderr.write(text)
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

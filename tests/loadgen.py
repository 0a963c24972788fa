"""A small closed-loop load generator for rollout tests: N threads POST predictions until stopped
and count every failure (a non-2xx answer or a connection error)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)


class Load:
    """Send the same request from `concurrency` threads, each on a fresh connection per request
    (so a proxy reload cannot race a reused keep-alive connection in the client), each thread at
    most `rate` requests a second: every connection leaves a socket in TIME_WAIT for 60 s, on the
    client and on docker's port proxy, and at thousands a second the host runs out of ephemeral
    ports (28,232 here) — the failures would be the load generator's, not the service's."""

    def __init__(self, url: str, body: dict, concurrency: int = 8, headers: dict[str, str] | None = None,
                 rate: float = 30.0) -> None:
        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self.body = json.dumps(body).encode()
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.concurrency = concurrency
        self.period = 1.0 / rate
        self.result = LoadResult()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Load:
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(self.concurrency)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                conn.request("POST", self.path, self.body, self.headers)
                response = conn.getresponse()
                payload = response.read()
                conn.close()
                outcome = None if 200 <= response.status < 300 else f"HTTP {response.status}: {payload[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            with self._lock:
                if outcome is None:
                    self.result.ok += 1
                else:
                    self.result.failures.append(f"{time.strftime('%H:%M:%S')} {outcome}")
            self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))

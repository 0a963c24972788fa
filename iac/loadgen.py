"""Load generators (stdlib only, not in the image), in two modes:

- ``run_load``, the **bench** mode behind ``modelstack bench``: closed loop, as fast as it goes.
  ``concurrency`` keep-alive connections each send a request, wait for the response, and send the
  next, for ``duration`` seconds. The connections are spread over ``processes`` worker processes
  (default: one per CPU) so the generator is not limited by one interpreter's GIL. Bodies rotate
  through the given list. Latency is measured per request from the first byte sent to the last
  byte of the response; any non-2xx status or connection error counts as an error.
- ``PacedLoad``, the **paced** mode the rollout tests and benchmark run in the background: a few
  threads at a bounded rate, a fresh connection per request, every failure recorded with its time,
  until the ``with`` block ends.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Self
from urllib.parse import urlsplit


@dataclass
class BenchResult:
    url: str
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    throughput_rps: float
    latency_ms: dict[str, float]
    statuses: dict[str, int]
    processes: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_requests(
    url: str, bodies: list[bytes], headers: dict[str, str] | None = None
) -> tuple[str, int, list[bytes]]:
    """(host, port, raw HTTP/1.1 requests) for POSTing each body to ``url``."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"the URL must be http://host[:port]/path, got {url!r}")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host, port = parts.hostname, parts.port or 80
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    raw = [
        (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{extra}\r\n"
        ).encode("latin-1")
        + body
        for body in bodies
    ]
    return host, port, raw


def _read_response(sock: socket.socket, buffer: bytearray) -> int:
    """Read one response (Content-Length framed) from ``sock``; return its status."""
    while True:
        end = buffer.find(b"\r\n\r\n")
        if end >= 0:
            break
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        buffer += chunk
    head = bytes(buffer[:end]).decode("latin-1")
    status = int(head[9:12])
    length = 0
    close = False
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        lname = name.strip().lower()
        if lname == "content-length":
            length = int(value.strip())
        elif lname == "connection" and value.strip().lower() == "close":
            close = True
    total = end + 4 + length
    while len(buffer) < total:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        buffer += chunk
    del buffer[:total]
    if close:
        raise _Closed(status)
    return status


class _Closed(Exception):
    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def _connection_loop(
    host: str,
    port: int,
    requests: list[bytes],
    offset: int,
    deadline: float,
    latencies: list[float],
    statuses: dict[int, int],
    lock: threading.Lock,
) -> None:
    sock: socket.socket | None = None
    buffer = bytearray()
    i = offset
    local_lat: list[float] = []
    local_status: dict[int, int] = {}
    while time.perf_counter() < deadline:
        try:
            if sock is None:
                sock = socket.create_connection((host, port), timeout=30)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffer.clear()
            started = time.perf_counter()
            sock.sendall(requests[i % len(requests)])
            i += 1
            try:
                status = _read_response(sock, buffer)
            except _Closed as closed:
                status = closed.status
                sock.close()
                sock = None
            local_lat.append(time.perf_counter() - started)
            local_status[status] = local_status.get(status, 0) + 1
        except OSError:
            local_status[0] = local_status.get(0, 0) + 1  # 0: connection error
            if sock is not None:
                sock.close()
            sock = None
            time.sleep(0.01)
    if sock is not None:
        sock.close()
    with lock:
        latencies.extend(local_lat)
        for status, count in local_status.items():
            statuses[status] = statuses.get(status, 0) + count


def _worker(
    host: str,
    port: int,
    requests: list[bytes],
    connections: int,
    first: int,
    start_at: float,
    duration: float,
    out: Any,
) -> None:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    # perf_counter is not comparable across processes: convert the shared wall-clock start.
    delay = max(0.0, start_at - time.time())
    deadline = time.perf_counter() + delay + duration
    time.sleep(delay)
    threads = [
        threading.Thread(
            target=_connection_loop,
            args=(host, port, requests, first + k, deadline, latencies, statuses, lock),
            daemon=True,
        )
        for k in range(connections)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put((latencies, statuses))


def run_load(
    url: str,
    bodies: list[bytes],
    concurrency: int = 16,
    duration: float = 10.0,
    processes: int | None = None,
    headers: dict[str, str] | None = None,
    warmup: float = 1.0,
) -> BenchResult:
    """Drive ``url`` for ``warmup`` (not measured) then ``duration`` seconds; return the stats."""
    if concurrency < 1 or duration <= 0 or not bodies:
        raise ValueError("concurrency >= 1, duration > 0 and at least one body are needed")
    host, port, raw = build_requests(url, bodies, headers)
    procs = max(1, min(processes or os.cpu_count() or 1, concurrency))
    if warmup > 0:
        _run(host, port, raw, concurrency, warmup, procs)
    latencies, statuses = _run(host, port, raw, concurrency, duration, procs)
    latencies.sort()
    ok = sum(count for status, count in statuses.items() if 200 <= status < 300)
    total = sum(statuses.values())

    def pct(q: float) -> float:
        if not latencies:
            return float("nan")
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 3)

    return BenchResult(
        url=url,
        concurrency=concurrency,
        duration_s=duration,
        requests=total,
        errors=total - ok,
        throughput_rps=round(ok / duration, 1),
        latency_ms={
            "p50": pct(0.50),
            "p95": pct(0.95),
            "p99": pct(0.99),
            "max": round(latencies[-1] * 1000, 3) if latencies else float("nan"),
        },
        statuses={str(k): v for k, v in sorted(statuses.items())},
        processes=procs,
    )


def _run(
    host: str, port: int, raw: list[bytes], concurrency: int, duration: float, procs: int
) -> tuple[list[float], dict[int, int]]:
    ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    out = ctx.Queue()
    start_at = time.time() + 0.3  # every worker starts its clock together
    shares = [concurrency // procs + (1 if k < concurrency % procs else 0) for k in range(procs)]
    workers = []
    first = 0
    for share in shares:
        worker = ctx.Process(target=_worker, args=(host, port, raw, share, first, start_at, duration, out))
        worker.start()
        workers.append(worker)
        first += share
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    for _ in workers:
        lat, st = out.get(timeout=duration + 120)
        latencies.extend(lat)
        for status, count in st.items():
            statuses[status] = statuses.get(status, 0) + count
    for worker in workers:
        worker.join(timeout=10)
    return latencies, statuses


@dataclass(frozen=True)
class BenchPlan:
    target: str
    bodies: list[bytes]
    headers: dict[str, str]


def bench_plan(url: str, spec_path: Any, body_path: Any, protocol: str) -> BenchPlan:
    """Where `modelstack bench` sends what: bodies from the spec's evaluation data (and the API key
    by the spec's rule) or one body from a file."""
    import json

    from iac.spec.errors import UserError

    if protocol not in ("v1", "v2"):
        raise UserError.single("--protocol", "", f"{protocol!r} is not a protocol", "use v1 or v2")
    if (spec_path is None) == (body_path is None):
        raise UserError.single(
            "bench",
            "",
            "give the request body with exactly one of --spec or --body",
            "--spec model.yaml (evaluation data) or --body request.json",
        )
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UserError.single(url, "", "is not an http:// URL", "e.g. http://127.0.0.1:8501")
    has_path = parts.path not in ("", "/")
    if body_path is not None:
        if not body_path.is_file():
            raise UserError.single(str(body_path), "", "no such file", "give a file with one JSON request body")
        if not has_path:
            raise UserError.single(
                url,
                "",
                "has no path and --body does not say which model",
                "give the full URL, e.g. http://127.0.0.1:8501/v1/models/NAME:predict",
            )
        return BenchPlan(url, [body_path.read_bytes()], {})

    import numpy as np

    from iac.service_client import api_key_headers
    from iac.spec.load import load_resolved

    spec = load_resolved(spec_path)
    name, inputs = spec.name, spec.spec.model.inputs or []
    # Each input's samples, by name: the data file holds one array per input name, or the lone
    # input's as `x` (the keras family's data files).
    with np.load(spec.evaluation_path) as data:
        columns = {t.name: data[t.name if t.name in data.files else "x"][:64] for t in inputs}
    count = len(columns[inputs[0].name])
    if protocol == "v1":  # one row a request, each input by name
        bodies = [
            json.dumps({"instances": [{n: c[i].tolist() for n, c in columns.items()}]}).encode() for i in range(count)
        ]
        path = f"/v1/models/{name}:predict"
    else:  # one tensor per input, each of one sample
        bodies = [
            json.dumps(
                {
                    "inputs": [
                        {
                            "name": t.name,
                            "shape": [1, *columns[t.name][i].shape],
                            "datatype": t.dtype.value.upper().replace("FLOAT", "FP"),
                            "data": columns[t.name][i].ravel().tolist(),
                        }
                        for t in inputs
                    ]
                }
            ).encode()
            for i in range(count)
        ]
        path = f"/v2/models/{name}/infer"
    target = url if has_path else url.rstrip("/") + path
    return BenchPlan(target, bodies, api_key_headers(spec))


@dataclass
class PacedResult:
    ok: int = 0
    failures: list[str] = field(default_factory=list)  # "HH:MM:SS what went wrong", in order
    pools: dict[str, int] = field(default_factory=dict)  # answers per X-Modelstack-Pool (which version answered)


class ThreadedLoad:
    """``threads`` threads each running ``_loop`` (until ``_stop`` is set) while the ``with`` block
    runs; on exit each is waited for up to ``join_timeout`` seconds. Subclasses write ``_loop``."""

    join_timeout: float = 30.0

    def __init__(self, threads: int) -> None:
        self.concurrency = threads
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> Self:
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(self.concurrency)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.join_timeout)

    def _loop(self) -> None:
        raise NotImplementedError


class PacedLoad(ThreadedLoad):
    """POST the same body from ``concurrency`` threads while the ``with`` block runs, each on a fresh
    connection per request (so a proxy reload cannot race a reused keep-alive connection in the
    client), each thread at most ``rate`` requests a second: every connection leaves a socket in
    TIME_WAIT for 60 s, on the client and on docker's port proxy, and at thousands a second the host
    runs out of ephemeral ports — the failures would be the load generator's, not the service's."""

    def __init__(
        self,
        url: str,
        body: dict[str, Any] | list[dict[str, Any]],
        concurrency: int = 8,
        headers: dict[str, str] | None = None,
        rate: float = 30.0,
    ) -> None:
        """``body``: one request body, or a list cycled through (different inputs, e.g. for agreement checks)."""
        import json

        parts = urlsplit(url)
        self.host, self.port, self.path = parts.hostname or "127.0.0.1", parts.port or 80, parts.path
        self.bodies = [json.dumps(b).encode() for b in (body if isinstance(body, list) else [body])]
        self.body = self.bodies[0]
        self._sent = itertools.count()
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        super().__init__(concurrency)
        self.period = 1.0 / rate
        self.result = PacedResult()

    def _loop(self) -> None:
        import http.client

        while not self._stop.is_set():
            started = time.monotonic()
            pool: str | None = None  # which version answered; None when nothing did
            try:
                conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
                conn.request("POST", self.path, self.bodies[next(self._sent) % len(self.bodies)], self.headers)
                response = conn.getresponse()
                payload = response.read()
                pool = response.getheader("X-Modelstack-Pool") or ""
                conn.close()
                outcome = None if 200 <= response.status < 300 else f"HTTP {response.status}: {payload[:200]!r}"
            except (OSError, http.client.HTTPException) as exc:
                outcome = f"{type(exc).__name__}: {exc}"
            with self._lock:
                if pool is not None:
                    self.result.pools[pool] = self.result.pools.get(pool, 0) + 1
                if outcome is None:
                    self.result.ok += 1
                else:
                    self.result.failures.append(f"{time.strftime('%H:%M:%S')} {outcome}")
            self._stop.wait(max(0.0, self.period - (time.monotonic() - started)))

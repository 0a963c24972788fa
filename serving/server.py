"""HTTP model server for the serving image: TF Serving REST and Open Inference Protocol V2.

Only the standard library, numpy and the model runtime (ai-edge-litert, or onnxruntime for ONNX
artifacts) are available in the image, so this is a ``ThreadingHTTPServer`` (one thread per
connection, HTTP/1.1 keep-alive) in front of one shared runtime (``serving.runtime``), with
optional dynamic batching (``serving.batching``) and Prometheus metrics (``serving.metrics``).

Routes (``<name>`` is ``model_name`` from the config; ``/versions/1`` may follow it)::

    GET  /v1/models/<name>            TF Serving model status (AVAILABLE, or LOADING before ready)
    GET  /v1/models/<name>/metadata   signature (TF Serving shape) + the config's metadata dict
    POST /v1/models/<name>:predict    {"instances": [...]} -> {"predictions": [...]}
                                      {"inputs": ...}      -> {"outputs": [...]}
    GET  /v2                          V2 server metadata
    GET  /v2/health/live              {"live": true}
    GET  /v2/health/ready             {"ready": true} once the model is warmed up, else 503
    GET  /v2/models/<name>            V2 model metadata (name, versions, platform, inputs, outputs)
    GET  /v2/models/<name>/ready      {"name": ..., "ready": true}, else 503
    POST /v2/models/<name>/infer      {"inputs": [{"name", "shape", "datatype", "data"}]}
    GET  /metrics                     Prometheus text exposition
    GET  /healthz                     200 while the process is up
    GET  /readyz                      200 once the model is loaded and warmed up, else 503

With ``api_key_env`` set in the config, every route except the four health routes (/healthz,
/readyz, /v2/health/live, /v2/health/ready) answers 401 unless the request carries the key from
that environment variable as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``. The server
refuses to start (exit 2) when the variable is unset or empty.

Start-up order: the server binds and answers first, then loads and warms up the model, so
``/healthz`` answers during loading and ``/readyz`` (and predict) answer 503 until the model is
ready. A model that fails to load ends the process with exit code 1; a bad config with 2.

Client errors get JSON ``{"error": "..."}`` naming the field and what was expected: 400 for bad
JSON, shapes, dtypes, non-finite numbers, deep nesting or unexpected fields, 401 no/wrong API
key, 404 unknown model/route, 405 wrong method (with ``Allow``), 411 no Content-Length (chunked
bodies are not accepted), 413 body over ``max_body_bytes`` (checked before reading), 501 unknown
method, 503 not ready. They never cause a 500 or stop the server; a 500 (JSON too) means a bug,
is logged with its traceback, and the server keeps running. Each request writes one JSON
access-log line to stderr.

Performance: HTTP/1.1 keep-alive, one write per response, precomputed bodies for the fixed
routes, a small strict request parser instead of the stdlib's email-based one, one interpreter
per batch-size bucket (no tensor reallocation), and dynamic batching when configured.

SIGTERM (or SIGINT): stop accepting, close idle keep-alive connections, let in-flight requests
finish (up to ``DRAIN_TIMEOUT_S``), stop the batcher, exit 0.

Run with ``python -m serving.server``; the config path comes from ``$MODELSTACK_SERVING_CONFIG``
(default ``/app/serving.json``). Port 0 binds an ephemeral port, reported in the "listening" log.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import signal
import socket
import socketserver
import sys
import threading
import time
import traceback
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.batching import Batcher
from serving.config import InputSpec, ServingConfig
from serving.metrics import Metrics
from serving.protocols import (
    ClientError,
    decode_infer_request,
    decode_predict_request,
    encode_infer_response,
    encode_json,
    encode_outputs,
    error_body,
    metadata_document,
    parse_json,
    status_body,
    to_batch,
    v2_model_metadata,
    v2_server_metadata,
)
from serving.protocols import _show

if TYPE_CHECKING:
    from serving.runtime import Runtime

__all__ = [
    "ClientError", "ModelServer", "ModelState", "decode_infer_request", "decode_predict_request",
    "load_model", "main", "parse_json", "to_batch",
]

SERVER_VERSION = "0.4.0"
# Idle keep-alive connections are closed after this long so silent clients cannot pin threads.
IDLE_TIMEOUT_S = 75.0
# SIGTERM waits this long for in-flight requests; Docker's default stop timeout is 10 s.
DRAIN_TIMEOUT_S = 9.0
SWITCH_INTERVAL_S = 0.0005

_V1_ROUTE = re.compile(r"/v1/models/([^/:]+)(?:/versions/([^/:]+))?(/metadata|:predict)?")
_V2_ROUTE = re.compile(r"/v2/models/([^/]+?)(?:/versions/([^/]+?))?(/ready|/infer)?")
_FIXED_ROUTES = {
    "/healthz": "healthz", "/readyz": "readyz", "/metrics": "metrics", "/v2": "v2_server",
    "/v2/health/live": "v2_live", "/v2/health/ready": "v2_ready",
}
_ALLOWED_METHODS = {
    "healthz": ("GET", "HEAD"),
    "readyz": ("GET", "HEAD"),
    "metrics": ("GET", "HEAD"),
    "v1_status": ("GET", "HEAD"),
    "v1_metadata": ("GET", "HEAD"),
    "v1_predict": ("POST",),
    "v2_server": ("GET", "HEAD"),
    "v2_live": ("GET", "HEAD"),
    "v2_ready": ("GET", "HEAD"),
    "v2_model": ("GET", "HEAD"),
    "v2_model_ready": ("GET", "HEAD"),
    "v2_infer": ("POST",),
}
# Routes answered without the API key: liveness/readiness probes must work without secrets.
OPEN_ROUTES = frozenset({"healthz", "readyz", "v2_live", "v2_ready"})
_ROUTE_HINT = (
    "try /v1/models/<name>, /v1/models/<name>/metadata, /v1/models/<name>:predict, "
    "/v2/health/live, /v2/health/ready, /v2/models/<name>, /v2/models/<name>/ready, "
    "/v2/models/<name>/infer, /healthz, /readyz, /metrics"
)
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_JSON = b"application/json"
_PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"
_log_lock = threading.Lock()
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods, header names
MAX_LINE = 65536
MAX_HEADERS = 100


# --- logging ---------------------------------------------------------------------------------


def log_event(**fields: Any) -> None:
    """Write one JSON line to stderr (the container log)."""
    _write_log_line(json.dumps({"ts": _timestamp(), **fields}, separators=(",", ":"), default=str))


def _write_log_line(line: str) -> None:
    """Buffer a line; the log flusher writes the buffer to stderr every ``LOG_FLUSH_S``.

    Request threads never block on stderr (no lock convoy around a write) and never wake another
    thread per line; lines from one interval go out in one write, in order.
    """
    with _log_lock:
        _log_buffer.append(line)
        if _log_flusher[0] is None:
            thread = threading.Thread(target=_log_flusher_loop, name="log-flusher", daemon=True)
            _log_flusher[0] = thread
            thread.start()


LOG_FLUSH_S = 0.05
_log_buffer: list[str] = []
_log_flusher: list[threading.Thread | None] = [None]


def _log_flusher_loop() -> None:
    while True:
        time.sleep(LOG_FLUSH_S)
        flush_logs()


def flush_logs() -> None:
    """Write every buffered line now (the flusher does this periodically, main() at exit)."""
    with _log_lock:
        if not _log_buffer:
            return
        text = "\n".join(_log_buffer) + "\n"
        _log_buffer.clear()
        try:
            sys.stderr.write(text)
            sys.stderr.flush()
        except (OSError, ValueError):  # stderr closed: nothing useful left to do
            pass


_second_stamp: tuple[int, str] = (0, "")


def _timestamp() -> str:
    """UTC ISO-8601 with milliseconds; the seconds part is formatted once per second."""
    global _second_stamp
    now = time.time()
    second, stamp = _second_stamp
    if int(now) != second:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        _second_stamp = (int(now), stamp)
    return f"{stamp}.{int(now % 1 * 1000):03d}Z"



def check_model_matches_config(model: Runtime, spec: InputSpec) -> None:
    """Fail start-up when the config's input does not fit the artifact's input tensor."""
    model_shape = model.input_shape
    if len(model_shape) != len(spec.shape) or any(
        m not in (-1, c) for m, c in zip(model_shape, spec.shape)
    ):
        raise ValueError(
            f"inputs[0].shape {list(spec.shape)} does not match the model's input shape "
            f"{list(model_shape)} (batch dimension excluded)"
        )
    tensor = model.input_dtype
    client = np.dtype(spec.dtype)
    fits = (
        tensor.kind == "f"
        or client == tensor
        or (model.input_quantized and client.kind == "f")
        or (tensor.kind in "iu" and client.kind in "iu")
    )
    if not fits:
        raise ValueError(
            f"inputs[0].dtype {spec.dtype} cannot feed the model's {tensor.name} input tensor"
        )


class ModelState:
    """What the handlers share: the config, the model once ready, precomputed bodies, metrics."""

    def __init__(self, config: ServingConfig, api_key: str | None = None) -> None:
        self.config = config
        self.api_key = api_key.encode() if api_key else None
        self.model: Runtime | None = None
        self.batcher: Batcher | None = None
        self.sample_cost_s: float | None = None
        self.ready = False
        self.metrics = Metrics(ready=lambda: self.ready)
        self.status_loading = status_body("LOADING")
        self.status_available = status_body("AVAILABLE")
        self.metadata_body = b""
        self.v2_metadata_body = b""
        self.v2_server_body = encode_json(v2_server_metadata(SERVER_VERSION)).encode()
        self.v2_ready_body = encode_json({"name": config.model_name, "ready": True}).encode()
        self.v2_loading_body = encode_json({"name": config.model_name, "ready": False}).encode()

    def set_ready(self, model: Runtime, sample_cost_s: float | None = None) -> None:
        self.metadata_body = encode_json(metadata_document(self.config, model)).encode()
        self.v2_metadata_body = encode_json(v2_model_metadata(self.config, model)).encode()
        self.model = model
        if self.config.batching_enabled:
            self.batcher = Batcher(
                model.predict, self.config.max_batch_size, self.config.max_latency_ms, self.metrics,
                sample_cost_s=sample_cost_s,
            )
        self.ready = True  # set last: handlers read `ready` and then use the fields above

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run a batch through the batcher (if enabled) or directly; record metrics."""
        if self.batcher is not None:
            return self.batcher.submit(batch)
        assert self.model is not None
        started = time.perf_counter()
        outputs = self.model.predict(batch)
        self.metrics.inference(len(batch), time.perf_counter() - started)
        return outputs

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.stop()


def warm_up_sizes(config: ServingConfig) -> tuple[int, ...]:
    """Batch sizes to run once at start-up: 1, and every bucket a batch can land in."""
    sizes = [1]
    while config.batching_enabled and sizes[-1] < config.max_batch_size:
        sizes.append(min(sizes[-1] * 2, config.max_batch_size))
    return tuple(sizes)


def load_model(state: ModelState) -> float:
    """Load, check and warm up the model, then mark the state ready; return warm-up ms."""
    from serving.runtime import load_runtime

    config = state.config
    model = load_runtime(config)
    check_model_matches_config(model, config.input)
    started = time.perf_counter()
    model.warm_up(warm_up_sizes(config))
    warm_up_ms = (time.perf_counter() - started) * 1000
    state.sample_cost_s = _single_sample_cost(model)
    state.set_ready(model, state.sample_cost_s)
    return warm_up_ms


def _single_sample_cost(model: Runtime, runs: int = 15) -> float:
    """Median seconds of one single-sample inference (the batcher's inline threshold)."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        model.warm_up((1,))
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def read_api_key(config: ServingConfig) -> str | None:
    """The API key from the environment, or None when the config enables none.

    Raises ValueError when the config names a variable that is unset or empty: a server meant
    to require a key must not start without one.
    """
    if config.api_key_env is None:
        return None
    key = os.environ.get(config.api_key_env, "")
    if not key.strip():
        raise ValueError(
            f"api_key_env: the environment variable {config.api_key_env} is unset or empty; "
            "set it to the API key clients must send"
        )
    return key.strip()


# --- HTTP server --------------------------------------------------------------------------------


class RequestHeaders:
    """Request headers by lower-case name; a repeated header keeps all its values."""

    __slots__ = ("_values",)

    def __init__(self) -> None:
        self._values: dict[str, list[str]] = {}

    def add(self, name: str, value: str) -> None:
        self._values.setdefault(name.lower(), []).append(value)

    def get(self, name: str, default: str = "") -> str:
        values = self._values.get(name.lower())
        return values[0] if values else default

    def get_all(self, name: str) -> list[str]:
        return self._values.get(name.lower(), [])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._values


class _ClientGone(Exception):
    """The client closed or stalled mid-request: nothing can be answered."""


class ModelServer(ThreadingHTTPServer):
    """Threaded HTTP server that tracks connections so SIGTERM can drain them."""

    daemon_threads = True
    block_on_close = False  # stop() waits for connections itself, with a deadline
    allow_reuse_address = True
    request_queue_size = 1024  # the default (5) drops connections under a load test

    def __init__(self, address: tuple[str, int], state: ModelState) -> None:
        self.state = state
        self.draining = False
        self._connections: set[RequestHandler] = set()
        self._cond = threading.Condition()
        self._date: tuple[int, bytes] = (0, b"")
        super().__init__(address, RequestHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn) that can stall in a container.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Exceptions that escape a handler: a vanished client is routine, anything else is logged.
        exc = sys.exc_info()[1]
        if not isinstance(exc, (ConnectionError, TimeoutError)):
            log_event(event="connection_error", error=traceback.format_exc())

    def date_header(self) -> bytes:
        """The Date header line, formatted once per second."""
        now = int(time.time())
        second, line = self._date
        if second != now:
            line = f"Date: {formatdate(now, usegmt=True)}\r\n".encode()
            self._date = (now, line)
        return line

    def register(self, handler: RequestHandler) -> None:
        with self._cond:
            self._connections.add(handler)
            if self.draining:  # accepted just before shutdown: serve what was sent, then close
                handler.stop_reading()

    def unregister(self, handler: RequestHandler) -> None:
        with self._cond:
            self._connections.discard(handler)
            self._cond.notify_all()

    def set_busy(self, handler: RequestHandler, busy: bool) -> bool:
        """Mark a connection as mid-request (or idle again); return whether we are draining."""
        with self._cond:
            handler.busy = busy
            return self.draining

    def stop(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Stop accepting, close idle connections, wait for in-flight requests to finish.

        Returns True when every connection closed within ``timeout``.
        """
        self.shutdown()  # ends the accept loop; connections already accepted carry on
        self.server_close()
        with self._cond:
            self.draining = True  # from now on every response says "Connection: close"
            log_event(event="draining", connections=len(self._connections))
            for handler in self._connections:
                if not handler.busy:
                    handler.stop_reading()
            return self._cond.wait_for(lambda: not self._connections, timeout)


class RequestHandler(BaseHTTPRequestHandler):
    """One keep-alive connection; responses are always JSON with a Content-Length."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small responses must not wait for delayed ACKs
    timeout = IDLE_TIMEOUT_S
    server: ModelServer
    headers: RequestHeaders  # type: ignore[assignment]  # set by our parse_request
    raw_requestline: bytes

    busy = False
    _body_pending = False
    _responded = False
    _started = 0.0
    _route_kind = "other"  # metrics label; "other" for unknown routes and unparsable requests

    # -- connection lifecycle (used by ModelServer.stop) --

    def setup(self) -> None:
        super().setup()
        self._started = time.perf_counter()
        self.server.register(self)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.unregister(self)

    def stop_reading(self) -> None:
        """Wake a read blocked on an idle connection with EOF; data already received stays."""
        try:
            self.connection.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    def handle_one_request(self) -> None:
        self.path = ""  # stale values from the previous request must not reach the access log
        self.command = ""
        super().handle_one_request()
        if self.server.set_busy(self, False):
            self.close_connection = True

    def parse_request(self) -> bool:
        """Parse the request line and headers (replaces the stdlib's email-based parser).

        The stdlib builds an ``email.message.Message`` per request, the biggest Python cost of
        a small predict call; this parser is strict instead: anything it does not understand is
        a 400 and the connection closes, so a proxy in front cannot disagree with it about
        where a request ends.
        """
        self._started = time.perf_counter()
        self._route_kind = "other"
        self._responded = False
        self._body_pending = False
        self.server.set_busy(self, True)
        self.close_connection = True  # until the request shows it may keep the connection
        self.request_version = "HTTP/1.1"
        line = str(self.raw_requestline, "latin-1").rstrip("\r\n")
        self.requestline = line
        if not line:  # a stray CRLF between requests is to be skipped (RFC 9112 2.2)
            self.close_connection = False
            return False
        words = line.split()
        if len(words) != 3 or not _TOKEN.fullmatch(words[0]):
            self.send_error(400, f"malformed request line {_show(line)}")
            return False
        self.command, self.path, version = words
        if version not in ("HTTP/1.1", "HTTP/1.0"):
            self.send_error(505, f"{_show(version)} is not supported; use HTTP/1.1")
            return False
        self.request_version = version
        headers = self._read_headers()
        if headers is None:
            return False
        self.headers = headers
        tokens = {token.strip() for token in headers.get("connection", "").lower().split(",")}
        if version == "HTTP/1.1":
            self.close_connection = "close" in tokens
        else:
            self.close_connection = "keep-alive" not in tokens
        length = headers.get("content-length", "0").strip()
        self._body_pending = "transfer-encoding" in headers or length not in ("", "0")
        return True

    def _read_headers(self) -> RequestHeaders | None:
        """Read header lines up to the blank line; on a bad one answer the error, return None."""
        headers = RequestHeaders()
        for _ in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(MAX_LINE + 1)
            if len(raw) > MAX_LINE:
                self.send_error(431, f"a header line is longer than {MAX_LINE} bytes")
                return None
            if raw in (b"\r\n", b"\n"):
                return headers
            if not raw:  # the client hung up mid-request: nobody to answer
                return None
            name, colon, value = str(raw, "latin-1").rstrip("\r\n").partition(":")
            # Obsolete line folding and spaces before the colon are rejected (RFC 9112 5.1, 5.2).
            if not colon or not _TOKEN.fullmatch(name):
                self.send_error(400, f"malformed header line {_show(name + colon + value)}")
                return None
            headers.add(name, value.strip(" \t"))
        self.send_error(431, f"more than {MAX_HEADERS} header lines")
        return None

    # -- methods --

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_OPTIONS(self) -> None:
        self._dispatch("OPTIONS")

    def _dispatch(self, method: str) -> None:
        headers: tuple[tuple[str, str], ...] = ()
        content_type = _JSON
        try:
            status, body, content_type = self._route(method)
        except ClientError as exc:
            status, body, headers = exc.status, error_body(exc.message), exc.headers
            if exc.close:
                self.close_connection = True
        except _ClientGone:
            self.close_connection = True
            self._record(499)  # nginx's "client closed request": counted, never sent
            return
        except Exception:
            log_event(
                event="internal_error", method=method, path=self.path, error=traceback.format_exc()
            )
            status, body = 500, error_body("internal server error; see the server log")
        self._respond(status, body, headers, head_only=method == "HEAD", content_type=content_type)

    def _route(self, method: str) -> tuple[int, bytes, bytes]:
        path = self.path.partition("?")[0]
        name = version = None
        kind = _FIXED_ROUTES.get(path)
        if kind is None:
            if path.startswith("/v1/"):
                match = _V1_ROUTE.fullmatch(path)
                if match is not None:
                    name, version, suffix = match.groups()
                    kind = {None: "v1_status", "/metadata": "v1_metadata", ":predict": "v1_predict"}[suffix]
            elif path.startswith("/v2/"):
                match = _V2_ROUTE.fullmatch(path)
                if match is not None:
                    name, version, suffix = match.groups()
                    kind = {None: "v2_model", "/ready": "v2_model_ready", "/infer": "v2_infer"}[suffix]
        if kind is not None:
            self._route_kind = kind
            if kind not in OPEN_ROUTES:
                self._check_api_key()
        elif self.server.state.api_key is not None:
            self._check_api_key()  # unknown paths too: no route listing for anonymous clients
        if kind is None:
            raise ClientError(404, f"no route {_show(path)}; {_ROUTE_HINT}")
        allowed = _ALLOWED_METHODS[kind]
        if method not in allowed:
            raise ClientError(
                405,
                f"{method} is not allowed on {path}; use {' or '.join(allowed)}",
                headers=(("Allow", ", ".join(allowed)),),
            )
        if name is not None:
            self._check_model(name, version)
        serve: Callable[[], tuple[int, bytes]] = getattr(self, f"_serve_{kind}")
        if kind == "metrics":
            return 200, self.server.state.metrics.render(), _PROMETHEUS
        status, body = serve()
        return status, body, _JSON

    def _check_api_key(self) -> None:
        """401 unless the request carries the key (``Authorization: Bearer`` or ``X-API-Key``)."""
        expected = self.server.state.api_key
        if expected is None:
            return
        sent = self.headers.get("x-api-key")
        if not sent:
            scheme, _, credentials = self.headers.get("authorization").partition(" ")
            sent = credentials.strip() if scheme.lower() == "bearer" else ""
        # compare_digest: the comparison takes the same time wherever the first difference is.
        if not sent or not hmac.compare_digest(sent.encode("latin-1", "replace"), expected):
            raise ClientError(
                401,
                "missing or wrong API key; send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers=(("WWW-Authenticate", 'Bearer realm="modelstack"'),),
            )

    def _check_model(self, name: str, version: str | None) -> None:
        served = self.server.state.config.model_name
        if name != served:
            raise ClientError(
                404, f"model {_show(name)} is not served here; this server serves {_show(served)}"
            )
        if version not in (None, "1"):
            raise ClientError(
                404, f"model {_show(name)} has no version {_show(version)}; the only version is 1"
            )

    # -- route handlers: return (status, body) or raise ClientError --

    def _serve_healthz(self) -> tuple[int, bytes]:
        return 200, b'{"status":"ok"}'

    def _serve_readyz(self) -> tuple[int, bytes]:
        if self.server.state.ready:
            return 200, b'{"status":"ready"}'
        return 503, b'{"status":"loading"}'

    def _serve_metrics(self) -> tuple[int, bytes]:  # answered in _route (not JSON)
        return 200, b""

    def _serve_v1_status(self) -> tuple[int, bytes]:
        state = self.server.state
        return 200, state.status_available if state.ready else state.status_loading

    def _serve_v1_metadata(self) -> tuple[int, bytes]:
        state = self._ready_state()
        return 200, state.metadata_body

    def _serve_v1_predict(self) -> tuple[int, bytes]:
        state = self._ready_state()
        body = self._read_body()
        batch, row_format = decode_predict_request(body, state.config.input)
        outputs = state.infer(batch)
        return 200, encode_outputs("predictions" if row_format else "outputs", outputs)

    def _serve_v2_server(self) -> tuple[int, bytes]:
        return 200, self.server.state.v2_server_body

    def _serve_v2_live(self) -> tuple[int, bytes]:
        return 200, b'{"live":true}'

    def _serve_v2_ready(self) -> tuple[int, bytes]:
        if self.server.state.ready:
            return 200, b'{"ready":true}'
        return 503, b'{"ready":false}'

    def _serve_v2_model(self) -> tuple[int, bytes]:
        state = self._ready_state()
        return 200, state.v2_metadata_body

    def _serve_v2_model_ready(self) -> tuple[int, bytes]:
        state = self.server.state
        return (200, state.v2_ready_body) if state.ready else (503, state.v2_loading_body)

    def _serve_v2_infer(self) -> tuple[int, bytes]:
        state = self._ready_state()
        body = self._read_body()
        batch, request_id = decode_infer_request(body, state.config.input)
        outputs = state.infer(batch)
        return 200, encode_infer_response(state.config.model_name, outputs, request_id)

    def _ready_state(self) -> ModelState:
        state = self.server.state
        if not state.ready:
            raise ClientError(
                503,
                f"model {_show(state.config.model_name)} is still loading; retry when /readyz "
                "answers 200",
                headers=(("Retry-After", "1"),),
            )
        return state

    def _read_body(self) -> bytes:
        """Read exactly Content-Length bytes, checking the length before reading anything."""
        if "Transfer-Encoding" in self.headers:
            raise ClientError(
                411, "chunked transfer encoding is not supported; send a Content-Length header",
                close=True,
            )
        values = [v.strip() for v in self.headers.get_all("Content-Length")]
        if not values:
            raise ClientError(411, "a Content-Length header is required for POST", close=True)
        if len(set(values)) != 1 or not (values[0].isascii() and values[0].isdigit()):
            raise ClientError(
                400, f"Content-Length must be one non-negative integer, got {_show(values)}",
                close=True,
            )
        length = int(values[0])
        limit = self.server.state.config.max_body_bytes
        if length > limit:
            raise ClientError(
                413, f"the request body is {length} bytes; the limit is {limit} (max_body_bytes)",
                close=True,
            )
        expect = self.headers.get("Expect").lower()
        if expect == "100-continue" and self.request_version == "HTTP/1.1":
            # Only now, after the checks above, is the client told to send the body.
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        try:
            body = self.rfile.read(length)
        except OSError as exc:  # includes the idle timeout
            raise _ClientGone() from exc
        if len(body) != length:
            raise _ClientGone()
        self._body_pending = False
        return body

    # -- responses and logging --

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Called by the stdlib for malformed request lines/headers; answer in JSON and hang up
        # since the stream may be out of sync.
        self.close_connection = True
        self._respond(code, error_body(message or HTTPStatus(code).phrase), (), self.command == "HEAD")

    def _respond(
        self,
        status: int,
        body: bytes,
        headers: tuple[tuple[str, str], ...] = (),
        head_only: bool = False,
        content_type: bytes = _JSON,
    ) -> None:
        if self._responded:
            return
        self._responded = True
        if self._body_pending or self.server.draining:
            self.close_connection = True  # an unread body would be parsed as the next request
        parts = [
            _STATUS_LINES[status],
            b"Content-Type: ",
            content_type,
            b"\r\nContent-Length: ",
            str(len(body)).encode(),
            b"\r\n",
            self.server.date_header(),
        ]
        parts.extend(f"{key}: {value}\r\n".encode("latin-1") for key, value in headers)
        if self.close_connection:
            parts.append(b"Connection: close\r\n")
        elif self.request_version == "HTTP/1.0":
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if not head_only:
            parts.append(body)
        self.wfile.write(b"".join(parts))  # one write: headers and body in one segment
        self._record(status)

    def _record(self, status: int) -> None:
        """The access-log line and the request metrics, once per answered request."""
        elapsed = time.perf_counter() - self._started
        self.server.state.metrics.request(self._route_kind, status, elapsed)
        self._log_access(status, elapsed)

    def _log_access(self, status: int, elapsed: float) -> None:
        # Hand-built JSON: this runs for every request, json.dumps of a dict costs more.
        _write_log_line(
            f'{{"ts":"{_timestamp()}","event":"request","method":{json.dumps(self.command or "")},'
            f'"path":{json.dumps(self.path or "")},"status":{status},'
            f'"duration_ms":{elapsed * 1000:.3f},'
            f'"remote":{json.dumps(self.client_address[0] if self.client_address else "")}}}'
        )

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib's text log (e.g. "Request timed out") is replaced by the JSON access log.
        pass


# --- entry point ---------------------------------------------------------------------------------


def main() -> int:
    """Serve the configured model until SIGTERM; return the process exit code."""
    try:
        return _serve()
    finally:
        flush_logs()


def _serve() -> int:
    try:
        config = ServingConfig.load()
        api_key = read_api_key(config)
    except ValueError as exc:
        log_event(event="config_error", error=str(exc))
        return 2
    state = ModelState(config, api_key)
    try:
        server = ModelServer((config.host, config.port), state)
    except OSError as exc:
        log_event(event="bind_error", host=config.host, port=config.port, error=str(exc))
        return 1

    # Request threads hold the GIL only for short bursts; switching every 0.5 ms instead of 5 ms
    # keeps one waiting thread from stalling for several intervals (a p99 cost, no throughput).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http-accept", daemon=True
    ).start()
    host, port = server.server_address[:2]
    log_event(event="listening", host=host, port=port, model=config.model_name)

    try:
        warm_up_ms = load_model(state)
    except Exception as exc:  # any load failure is fatal: report it and exit non-zero
        log_event(event="load_failed", artifact=config.artifact, error=f"{type(exc).__name__}: {exc}")
        server.stop(timeout=1.0)
        return 1
    log_event(
        event="ready", model=config.model_name, port=port, warm_up_ms=round(warm_up_ms, 3),
        runtime=config.resolved_runtime, threads=config.threads,
        max_batch_size=config.max_batch_size, max_latency_ms=config.max_latency_ms,
        sample_ms=round((state.sample_cost_s or 0) * 1000, 4),
        batching=("off" if state.batcher is None else "inline" if state.batcher.bypass else "on"),
        auth="api_key" if api_key else "none",
    )

    stop.wait()
    drained = server.stop()
    state.close()
    log_event(event="stopped", drained=drained)
    return 0


if __name__ == "__main__":
    sys.exit(main())

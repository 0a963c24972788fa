"""HTTP model server for the serving image: TF Serving REST and Open Inference Protocol V2.

Only the standard library, numpy, orjson and the model runtime (ai-edge-litert, or onnxruntime for
ONNX artifacts) are in the image. One asyncio event loop serves every connection
(``serving.http1``); predict and infer requests go through the batcher (``serving.batching``),
which runs the model on the loop thread or, for a model slower than a thread hand-off, on one
inference thread; metrics in ``serving.metrics``, JSON logs in ``serving.logs``.

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

Start-up order: the server binds and answers first, then loads and warms up the model (in a
thread, so the loop keeps answering), so ``/healthz`` answers during loading and ``/readyz`` (and
predict) answer 503 until the model is ready. A model that fails to load ends the process with
exit code 1; a bad config with 2.

Client errors get JSON ``{"error": "..."}`` naming the field and what was expected: 400 for bad
JSON, shapes, dtypes, non-finite numbers, deep nesting or unexpected fields, 401 no/wrong API
key, 404 unknown model/route, 405 wrong method (with ``Allow``), 411 no Content-Length (chunked
bodies are not accepted), 413 body over ``max_body_bytes`` (checked before the body is awaited),
501 unknown method, 503 not ready. They never cause a 500 or stop the server; a 500 (JSON too)
means a bug, is logged with its traceback, and the server keeps running. Each request writes one
JSON access-log line to stderr.

SIGTERM (or SIGINT): stop accepting, close idle keep-alive connections, let in-flight and queued
requests finish (up to ``DRAIN_TIMEOUT_S``), exit 0.

Run with ``python -m serving.server``; the config path comes from ``$MODELSTACK_SERVING_CONFIG``
(default ``/app/serving.json``). Port 0 binds an ephemeral port, reported in the "listening" log.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import re
import signal
import socket
import sys
import threading
import time
import traceback
from typing import TYPE_CHECKING

import numpy as np

from serving.batching import Batcher, settle
from serving.config import InputSpec, ServingConfig
from serving.http1 import JSON, HttpConnection, Request
from serving.logs import flush_logs, log_event, timestamp, write_line
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
# SIGTERM waits this long for in-flight requests; Docker's default stop timeout is 10 s.
DRAIN_TIMEOUT_S = 9.0
# The loop thread holds the GIL most of the time; switching every 0.5 ms instead of 5 ms lets the
# inference thread take its result back without waiting several intervals (a p99 cost).
SWITCH_INTERVAL_S = 0.0005
# How often connections are checked for the timeouts in serving.http1.
SWEEP_INTERVAL_S = 1.0

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
_PROMETHEUS = b"text/plain; version=0.0.4; charset=utf-8"


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



def warm_up_sizes(config: ServingConfig) -> tuple[int, ...]:
    """Batch sizes to run once at start-up: 1, and every bucket a batch can land in."""
    sizes = [1]
    while config.batching_enabled and sizes[-1] < config.max_batch_size:
        sizes.append(min(sizes[-1] * 2, config.max_batch_size))
    return tuple(sizes)


def _single_sample_cost(model: Runtime, runs: int = 15) -> float:
    """Median seconds of one single-sample inference (whether the batcher runs the model on the loop or a thread)."""
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



# --- the model ---------------------------------------------------------------------------------


class ModelState:
    """What the routes share: the config, the batcher once the model is ready, bodies, metrics."""

    def __init__(self, config: ServingConfig, api_key: str | None = None) -> None:
        self.config = config
        self.api_key = api_key.encode() if api_key else None
        self.batcher: Batcher | None = None
        self.ready = False
        self.metrics = Metrics(ready=lambda: self.ready)
        self.status_loading = status_body("LOADING")
        self.status_available = status_body("AVAILABLE")
        self.metadata_body = b""
        self.v2_metadata_body = b""
        self.v2_server_body = encode_json(v2_server_metadata(SERVER_VERSION)).encode()
        self.v2_ready_body = encode_json({"name": config.model_name, "ready": True}).encode()
        self.v2_loading_body = encode_json({"name": config.model_name, "ready": False}).encode()

    def set_ready(self, model: Runtime, loop: asyncio.AbstractEventLoop, sample_cost_s: float | None = None) -> None:
        """Serve ``model`` from now on (called on the loop thread)."""
        self.metadata_body = encode_json(metadata_document(self.config, model)).encode()
        self.v2_metadata_body = encode_json(v2_model_metadata(self.config, model)).encode()
        self.batcher = Batcher(
            loop, model.predict, self.config.max_batch_size, self.config.max_latency_ms,
            self.metrics, sample_cost_s=sample_cost_s,
        )
        self.ready = True  # set last: routes read `ready` and then use the fields above

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


def load_model(config: ServingConfig) -> tuple[Runtime, float, float]:
    """Load, check and warm up the model: (runtime, warm-up ms, single-sample seconds)."""
    from serving.runtime import load_runtime

    model = load_runtime(config)
    check_model_matches_config(model, config.input)
    started = time.perf_counter()
    model.warm_up(warm_up_sizes(config))
    warm_up_ms = (time.perf_counter() - started) * 1000
    return model, warm_up_ms, _single_sample_cost(model)


# --- HTTP ----------------------------------------------------------------------------------------


class ModelServer:
    """The listening socket, its connections and the routes; everything runs on one event loop."""

    def __init__(self, address: tuple[str, int], state: ModelState) -> None:
        self.state = state
        self.draining = False
        self.max_body_bytes = state.config.max_body_bytes
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

    async def stop(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
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
        if self.state.batcher is not None:  # answers for clients that left are still computed
            try:
                await asyncio.wait_for(self.state.batcher.drain(), 1.0)
            except TimeoutError:
                drained = False
        return drained

    def _sweep(self) -> None:
        """End connections that are silent, stuck or too slow (see ``HttpConnection.expire``)."""
        now = time.monotonic()
        for conn in list(self._connections):
            conn.expire(now)
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP_INTERVAL_S, self._sweep)

    # -- connection owner (serving.http1.Owner) --

    def register(self, conn: HttpConnection) -> None:
        self._connections.add(conn)

    def unregister(self, conn: HttpConnection) -> None:
        self._connections.discard(conn)
        if self.draining and not self._connections and self._closed is not None:
            self._closed.set()

    def record(self, request: Request, status: int, remote: str) -> None:
        """The request metrics and the access-log line, once per answered request."""
        elapsed = time.perf_counter() - request.started
        self.state.metrics.request(request.route, status, elapsed)
        # Hand-built JSON: this runs for every request, json.dumps of a dict costs more.
        write_line(
            f'{{"ts":"{timestamp()}","event":"request","method":{json.dumps(request.method)},'
            f'"path":{json.dumps(request.target)},"status":{status},'
            f'"duration_ms":{elapsed * 1000:.3f},"remote":{json.dumps(remote)}}}'
        )

    def handle(self, request: Request, conn: HttpConnection) -> None:
        """Answer ``request`` now, or once the batcher has its output."""
        try:
            kind = self._route(request)
            if kind in ("v1_predict", "v2_infer"):
                self._infer(request, conn, kind)
                return
            status, body = self._answer(kind)
            conn.respond(request, status, body, content_type=_PROMETHEUS if kind == "metrics" else JSON)
        except ClientError as exc:
            conn.respond(request, exc.status, error_body(exc.message), exc.headers, close=exc.close)
        except Exception:
            self._internal_error(request, conn)

    def _infer(self, request: Request, conn: HttpConnection, kind: str) -> None:
        state = self._ready_state()
        if kind == "v1_predict":
            batch, row_format = decode_predict_request(request.body, state.config.input)
            key = "predictions" if row_format else "outputs"
            encode = lambda outputs: encode_outputs(key, outputs)  # noqa: E731
        else:
            batch, request_id = decode_infer_request(request.body, state.config.input)
            encode = lambda outputs: encode_infer_response(state.config.model_name, outputs, request_id)  # noqa: E731

        def done(outputs: np.ndarray | None, error: BaseException | None) -> None:
            try:
                if error is not None:
                    raise error
                assert outputs is not None
                conn.respond(request, 200, encode(outputs))
            except Exception:
                self._internal_error(request, conn)

        assert state.batcher is not None
        state.batcher.submit(batch, done)

    def _internal_error(self, request: Request, conn: HttpConnection) -> None:
        log_event(
            event="internal_error", method=request.method, path=request.target,
            error=traceback.format_exc(),
        )
        conn.respond(request, 500, error_body("internal server error; see the server log"))

    def _route(self, request: Request) -> str:
        """The route kind, after the API key, method and model name are checked."""
        path = request.target.partition("?")[0]
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
            request.route = kind
            if kind not in OPEN_ROUTES:
                self._check_api_key(request)
        elif self.state.api_key is not None:
            self._check_api_key(request)  # unknown paths too: no route listing for anonymous clients
        if kind is None:
            raise ClientError(404, f"no route {_show(path)}; {_ROUTE_HINT}")
        allowed = _ALLOWED_METHODS[kind]
        if request.method not in allowed:
            raise ClientError(
                405,
                f"{request.method} is not allowed on {path}; use {' or '.join(allowed)}",
                headers=(("Allow", ", ".join(allowed)),),
            )
        if name is not None:
            self._check_model(name, version)
        return kind

    def _answer(self, kind: str) -> tuple[int, bytes]:
        """Status and body of a route answered at once (everything but predict and infer)."""
        state = self.state
        ready = state.ready
        if kind == "healthz":
            return 200, b'{"status":"ok"}'
        if kind == "readyz":
            return (200, b'{"status":"ready"}') if ready else (503, b'{"status":"loading"}')
        if kind == "v2_ready":
            return (200, b'{"ready":true}') if ready else (503, b'{"ready":false}')
        if kind == "v2_live":
            return 200, b'{"live":true}'
        if kind == "v2_server":
            return 200, state.v2_server_body
        if kind == "metrics":
            return 200, state.metrics.render()
        if kind == "v1_status":
            return 200, state.status_available if ready else state.status_loading
        if kind == "v2_model_ready":
            return (200, state.v2_ready_body) if ready else (503, state.v2_loading_body)
        if kind == "v1_metadata":
            return 200, self._ready_state().metadata_body
        assert kind == "v2_model", kind
        return 200, self._ready_state().v2_metadata_body

    def _check_api_key(self, request: Request) -> None:
        """401 unless the request carries the key (``Authorization: Bearer`` or ``X-API-Key``)."""
        expected = self.state.api_key
        if expected is None:
            return
        sent = request.headers.get("x-api-key")
        if not sent:
            scheme, _, credentials = request.headers.get("authorization").partition(" ")
            sent = credentials.strip() if scheme.lower() == "bearer" else ""
        # compare_digest: the comparison takes the same time wherever the first difference is.
        if not sent or not hmac.compare_digest(sent.encode("latin-1", "replace"), expected):
            raise ClientError(
                401,
                "missing or wrong API key; send it as 'Authorization: Bearer <key>' or 'X-API-Key: <key>'",
                headers=(("WWW-Authenticate", 'Bearer realm="modelstack"'),),
            )

    def _check_model(self, name: str, version: str | None) -> None:
        served = self.state.config.model_name
        if name != served:
            raise ClientError(
                404, f"model {_show(name)} is not served here; this server serves {_show(served)}"
            )
        if version not in (None, "1"):
            raise ClientError(
                404, f"model {_show(name)} has no version {_show(version)}; the only version is 1"
            )

    def _ready_state(self) -> ModelState:
        state = self.state
        if not state.ready:
            raise ClientError(
                503,
                f"model {_show(state.config.model_name)} is still loading; retry when /readyz "
                "answers 200",
                headers=(("Retry-After", "1"),),
            )
        return state


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
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    return asyncio.run(_run(server, state))


async def _run(server: ModelServer, state: ModelState) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    config = state.config
    host, port = server.address
    log_event(event="listening", host=host, port=port, model=config.model_name)

    # Loading runs in a daemon thread so the loop answers /healthz (and 503s) meanwhile, and a
    # SIGTERM during a long load exits at once instead of waiting for it.
    loading: asyncio.Future[tuple[Runtime, float, float]] = loop.create_future()
    threading.Thread(target=_load_in_background, args=(config, loop, loading), name="model-load", daemon=True).start()
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():  # SIGTERM while loading: nothing to finish
        await server.stop(timeout=1.0)
        log_event(event="stopped", drained=True)
        return 0
    try:
        model, warm_up_ms, sample_cost_s = loading.result()
    except Exception as exc:  # any load failure is fatal: report it and exit non-zero
        log_event(event="load_failed", artifact=config.artifact, error=f"{type(exc).__name__}: {exc}")
        await server.stop(timeout=1.0)
        return 1
    state.set_ready(model, loop, sample_cost_s)
    assert state.batcher is not None
    log_event(
        event="ready", model=config.model_name, port=port, warm_up_ms=round(warm_up_ms, 3),
        runtime=config.resolved_runtime, threads=config.threads,
        max_batch_size=config.max_batch_size, max_latency_ms=config.max_latency_ms,
        sample_ms=round(sample_cost_s * 1000, 4), inference_on=state.batcher.mode,
        batching="on" if config.batching_enabled else "off",
        auth="api_key" if state.api_key else "none",
    )

    await stopping
    drained = await server.stop()
    state.close()
    log_event(event="stopped", drained=drained)
    return 0


def _load_in_background(
    config: ServingConfig, loop: asyncio.AbstractEventLoop, loading: asyncio.Future[tuple[Runtime, float, float]]
) -> None:
    try:
        result, error = load_model(config), None
    except Exception as exc:
        result, error = None, exc
    try:
        loop.call_soon_threadsafe(settle, loading, result, error)
    except RuntimeError:  # the loop is gone: the server stopped while loading
        pass


if __name__ == "__main__":
    sys.exit(main())

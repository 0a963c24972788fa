"""HTTP model server for the serving image: TensorFlow Serving's REST API over LiteRT.

Only the standard library, numpy and ai-edge-litert are available in the image, so this is a
``ThreadingHTTPServer`` (one thread per connection, HTTP/1.1 keep-alive) in front of one shared
``LiteRTModel``.

Routes (``<name>`` is ``model_name`` from the config; ``/versions/1`` may follow it)::

    GET  /v1/models/<name>            TF Serving model status (AVAILABLE, or LOADING before ready)
    GET  /v1/models/<name>/metadata   signature (TF Serving shape) + the config's metadata dict
    POST /v1/models/<name>:predict    {"instances": [...]} -> {"predictions": [...]}
                                      {"inputs": ...}      -> {"outputs": [...]}
    GET  /healthz                     200 while the process is up
    GET  /readyz                      200 once the model is loaded and warmed up, else 503

Start-up order: the server binds and answers first, then loads and warms up the model, so
``/healthz`` answers during loading and ``/readyz`` (and predict) answer 503 until the model is
ready. A model that fails to load ends the process with exit code 1; a bad config with 2.

Client errors get JSON ``{"error": "..."}`` naming the field and what was expected: 400 for bad
JSON, shapes, dtypes or non-finite numbers, 404 unknown model/route, 405 wrong method (with
``Allow``), 411 no Content-Length (chunked bodies are not accepted), 413 body over
``max_body_bytes`` (checked before reading), 501 unknown method, 503 not ready. They never cause a
500 or stop the server; a 500 (JSON too) means a bug, is logged with its traceback, and the
server keeps running. Each request writes one JSON access-log line to stderr.

Performance: HTTP/1.1 keep-alive, one write per response, precomputed bodies for the fixed
routes, and a small strict request parser instead of the stdlib's email-based one.

SIGTERM (or SIGINT): stop accepting, close idle keep-alive connections, let in-flight requests
finish (up to ``DRAIN_TIMEOUT_S``), exit 0.

Run with ``python -m serving.server``; the config path comes from ``$MODELSTACK_SERVING_CONFIG``
(default ``/app/serving.json``). Port 0 binds an ephemeral port, reported in the "listening" log.
"""

from __future__ import annotations

import json
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

from serving.config import InputSpec, ServingConfig

if TYPE_CHECKING:
    from serving.runtime import LiteRTModel

# Idle keep-alive connections are closed after this long so silent clients cannot pin threads.
IDLE_TIMEOUT_S = 75.0
# SIGTERM waits this long for in-flight requests; Docker's default stop timeout is 10 s.
DRAIN_TIMEOUT_S = 9.0

_MODEL_ROUTE = re.compile(r"/v1/models/([^/:]+)(?:/versions/([^/:]+))?(/metadata|:predict)?")
_ALLOWED_METHODS = {
    "healthz": ("GET", "HEAD"),
    "readyz": ("GET", "HEAD"),
    "status": ("GET", "HEAD"),
    "metadata": ("GET", "HEAD"),
    "predict": ("POST",),
}
_PREDICT_FIELDS = ("instances", "inputs", "signature_name")
_TF_DTYPES = {
    "float32": "DT_FLOAT", "float16": "DT_HALF", "float64": "DT_DOUBLE", "int8": "DT_INT8",
    "uint8": "DT_UINT8", "int16": "DT_INT16", "int32": "DT_INT32", "int64": "DT_INT64",
    "bool": "DT_BOOL",
}
_STATUS_LINES = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_log_lock = threading.Lock()
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token: methods, header names
MAX_LINE = 65536
MAX_HEADERS = 100


# --- logging ---------------------------------------------------------------------------------


def log_event(**fields: Any) -> None:
    """Write one JSON line to stderr (the container log)."""
    _write_log_line(json.dumps({"ts": _timestamp(), **fields}, separators=(",", ":"), default=str))


def _write_log_line(line: str) -> None:
    with _log_lock:  # keeps lines from different threads whole
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


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


# --- request decoding (pure functions) ---------------------------------------------------------


class ClientError(Exception):
    """A request problem answered with a 4xx/503 JSON error; ``close`` ends the connection."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        close: bool = False,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.headers = headers


class _NonFiniteNumber(ValueError):
    pass


def _reject_constant(name: str) -> float:
    # Python's json accepts NaN/Infinity by default; they are not JSON and not valid features.
    raise _NonFiniteNumber(f"{name} is not allowed; send finite numbers")


_json_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json(body: bytes) -> Any:
    """Parse a request body, turning every decoding failure into a 400."""
    try:
        return _json_decoder.decode(body.decode("utf-8"))
    except _NonFiniteNumber as exc:
        raise ClientError(400, f"malformed JSON: {exc}") from None
    except UnicodeDecodeError:
        raise ClientError(400, "malformed JSON: the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ClientError(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ClientError(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's 4300-digit limit
        raise ClientError(400, f"malformed JSON: {exc}") from None


def decode_predict_request(body: bytes, spec: InputSpec) -> tuple[np.ndarray, bool]:
    """Turn a TF Serving predict body into an input batch; also say whether it was row format."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ClientError(
            400, f'the body must be a JSON object with "instances" or "inputs", got {_kind(payload)}'
        )
    extra = sorted(key for key in payload if key not in _PREDICT_FIELDS)
    if extra:
        raise ClientError(
            400,
            f"unexpected field(s) {', '.join(map(_show, extra))}; the body takes "
            '"instances" (row format) or "inputs" (columnar format)',
        )
    signature = payload.get("signature_name", "serving_default")
    if signature != "serving_default":
        raise ClientError(
            400, f'signature_name: only "serving_default" is served, got {_show(signature)}'
        )
    if "instances" in payload and "inputs" in payload:
        raise ClientError(
            400, 'give either "instances" (row format) or "inputs" (columnar format), not both'
        )
    if "instances" in payload:
        data, field, row_format = _unwrap_rows(payload["instances"], spec.name), "instances", True
    elif "inputs" in payload:
        data, field, row_format = _unwrap_columns(payload["inputs"], spec.name), "inputs", False
    else:
        raise ClientError(
            400, 'missing "instances" (row format) or "inputs" (columnar format) in the body'
        )
    # JSON booleans can only come from these tokens, so bodies without them skip the bool scan.
    may_hold_bools = b"true" in body or b"false" in body
    return to_batch(data, spec, field, may_hold_bools), row_format


def _unwrap_rows(instances: Any, name: str) -> Any:
    """Row format: each instance is the sample itself or {"<name>": sample}."""
    if not isinstance(instances, list) or not instances:
        raise ClientError(
            400,
            f'"instances" must be a non-empty array of samples for input "{name}", '
            f"got {_kind(instances) if not isinstance(instances, list) else 'an empty array'}",
        )
    if not isinstance(instances[0], dict):
        return instances  # non-numeric entries are reported by to_batch
    samples = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict) or instance.keys() != {name}:
            raise ClientError(
                400,
                f'instances[{i}]: expected an object with the single key "{name}" (the model\'s '
                f"input), got {_show(instance)}",
            )
        samples.append(instance[name])
    return samples


def _unwrap_columns(inputs: Any, name: str) -> Any:
    """Columnar format: the batch itself or {"<name>": batch}."""
    if isinstance(inputs, dict):
        if inputs.keys() != {name}:
            raise ClientError(
                400,
                f'"inputs": expected the single key "{name}" (the model\'s input), '
                f"got keys {_show(sorted(inputs))}",
            )
        return inputs[name]
    return inputs


def to_batch(data: Any, spec: InputSpec, field: str, may_hold_bools: bool = True) -> np.ndarray:
    """Validate nested lists against the input spec and convert them to a batch array."""
    try:
        array: np.ndarray | None = np.asarray(data)
    except (ValueError, TypeError, OverflowError):  # ragged nesting, odd objects
        array = None
    fits = array is not None and _numeric_batch_of(array, spec.shape)
    if not fits or may_hold_bools:
        # The slow walk runs only on failure (or possible booleans), to name the bad value.
        problem = _find_problem(data, spec, field)
        if problem:
            raise ClientError(400, problem)
    if array is None or not fits:  # the walk mirrors numpy's checks, so this is a backstop
        raise ClientError(
            400, f'{field}: input "{spec.name}" must be a numeric array of shape {[-1, *spec.shape]}'
        )
    return _cast(array, spec, field)


def _numeric_batch_of(array: np.ndarray, sample_shape: tuple[int, ...]) -> bool:
    return (
        array.dtype.kind in "iuf"
        and array.ndim == len(sample_shape) + 1
        and array.shape[0] > 0
        and array.shape[1:] == sample_shape
    )


def _find_problem(data: Any, spec: InputSpec, field: str) -> str | None:
    """Walk the nested lists and describe the first value that does not fit the spec."""
    dims: tuple[int | None, ...] = (None, *spec.shape)  # None: any non-zero batch size
    stack: list[tuple[Any, str, int]] = [(data, field, 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth == len(dims):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f'{path}: expected a number for input "{spec.name}", got {_show(value)}'
            if isinstance(value, int) and not -(2**63) <= value < 2**64:
                return f"{path}: integer {_show(value)} is out of range for {spec.dtype}"
            continue
        want = dims[depth]
        if not isinstance(value, list):
            return (
                f'{path}: expected an array (input "{spec.name}" takes shape '
                f"{[-1, *spec.shape]}), got {_show(value)}"
            )
        if want is None and not value:
            return f"{path}: expected a non-empty batch of samples, got an empty array"
        if want is not None and len(value) != want:
            return (
                f"{path}: expected {want} values (input \"{spec.name}\" takes samples of shape "
                f"{list(spec.shape)}), got {len(value)}"
            )
        stack.extend((value[i], f"{path}[{i}]", depth + 1) for i in range(len(value) - 1, -1, -1))
    return None


def _cast(array: np.ndarray, spec: InputSpec, field: str) -> np.ndarray:
    """Cast to the input's dtype, rejecting values that do not survive the cast."""
    target = np.dtype(spec.dtype)
    if target.kind == "f":
        with np.errstate(over="ignore"):
            batch = array.astype(target)
        if not np.isfinite(batch).all():
            raise ClientError(
                400,
                f'{field}: input "{spec.name}" has non-finite values (NaN, Infinity or outside '
                f"the {spec.dtype} range); send finite numbers",
            )
        return batch
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.trunc(array)).all()):
        raise ClientError(400, f'{field}: input "{spec.name}" takes integers ({spec.dtype})')
    info = np.iinfo(target)
    if array.min() < info.min or array.max() > info.max:
        raise ClientError(
            400, f'{field}: input "{spec.name}" takes {spec.dtype} values in {info.min}..{info.max}'
        )
    return array.astype(target)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    return _show(value)


def _show(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- model state and response documents --------------------------------------------------------


def _error_body(message: str) -> bytes:
    return _encode_json({"error": message}).encode()


def _status_body(state: str) -> bytes:
    return _encode_json(
        {
            "model_version_status": [
                {"version": "1", "state": state, "status": {"error_code": "OK", "error_message": ""}}
            ]
        }
    ).encode()


def _tensor_info(name: str, dtype: str, shape: tuple[int, ...]) -> dict[str, Any]:
    dims = [{"size": str(size), "name": ""} for size in (-1, *shape)]
    return {
        "dtype": _TF_DTYPES.get(dtype, dtype),
        "tensor_shape": {"dim": dims, "unknown_rank": False},
        "name": name,
    }


def metadata_document(config: ServingConfig, model: LiteRTModel) -> dict[str, Any]:
    """TF Serving's metadata response, plus the config's metadata under "modelstack"."""
    spec = config.input
    signature = {
        "inputs": {spec.name: _tensor_info(spec.name, spec.dtype, spec.shape)},
        "outputs": {
            "output_0": _tensor_info("output_0", model.output_dtype.name, model.output_shape)
        },
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": config.model_name, "signature_name": "", "version": "1"},
        "metadata": {
            "signature_def": {"signature_def": {"serving_default": signature}},
            "modelstack": config.metadata,
        },
    }


def check_model_matches_config(model: LiteRTModel, spec: InputSpec) -> None:
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
    """What the handlers share: the config, the model once ready, precomputed bodies."""

    def __init__(self, config: ServingConfig) -> None:
        self.config = config
        self.model: LiteRTModel | None = None
        self.ready = False
        self.status_loading = _status_body("LOADING")
        self.status_available = _status_body("AVAILABLE")
        self.metadata_body = b""

    def set_ready(self, model: LiteRTModel) -> None:
        self.metadata_body = _encode_json(metadata_document(self.config, model)).encode()
        self.model = model
        self.ready = True  # set last: handlers read `ready` and then use the fields above


def load_model(state: ModelState) -> float:
    """Load, check and warm up the model, then mark the state ready; return warm-up ms."""
    from serving.runtime import LiteRTModel

    config = state.config
    model = LiteRTModel(config.artifact, num_threads=config.threads)
    check_model_matches_config(model, config.input)
    started = time.perf_counter()
    model.warm_up()
    warm_up_ms = (time.perf_counter() - started) * 1000
    state.set_ready(model)
    return warm_up_ms


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
        try:
            status, body = self._route(method)
        except ClientError as exc:
            status, body, headers = exc.status, _error_body(exc.message), exc.headers
            if exc.close:
                self.close_connection = True
        except _ClientGone:
            self.close_connection = True
            return
        except Exception:
            log_event(
                event="internal_error", method=method, path=self.path, error=traceback.format_exc()
            )
            status, body = 500, _error_body("internal server error; see the server log")
        self._respond(status, body, headers, head_only=method == "HEAD")

    def _route(self, method: str) -> tuple[int, bytes]:
        path = self.path.partition("?")[0]
        if path in ("/healthz", "/readyz"):
            kind, name, version = path[1:], None, None
        else:
            match = _MODEL_ROUTE.fullmatch(path)
            if match is None:
                raise ClientError(
                    404,
                    f"no route {_show(path)}; try /v1/models/<name>, /v1/models/<name>/metadata, "
                    "/v1/models/<name>:predict, /healthz, /readyz",
                )
            name, version, suffix = match.groups()
            kind = {None: "status", "/metadata": "metadata", ":predict": "predict"}[suffix]
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
        return serve()

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

    def _serve_status(self) -> tuple[int, bytes]:
        state = self.server.state
        return 200, state.status_available if state.ready else state.status_loading

    def _serve_metadata(self) -> tuple[int, bytes]:
        state = self._ready_state()
        return 200, state.metadata_body

    def _serve_predict(self) -> tuple[int, bytes]:
        state = self._ready_state()
        body = self._read_body()
        batch, row_format = decode_predict_request(body, state.config.input)
        assert state.model is not None  # guaranteed by _ready_state
        outputs = state.model.predict(batch).tolist()
        return 200, _encode_json({"predictions" if row_format else "outputs": outputs}).encode()

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
        self._respond(code, _error_body(message or HTTPStatus(code).phrase), (), self.command == "HEAD")

    def _respond(
        self,
        status: int,
        body: bytes,
        headers: tuple[tuple[str, str], ...] = (),
        head_only: bool = False,
    ) -> None:
        if self._responded:
            return
        self._responded = True
        if self._body_pending or self.server.draining:
            self.close_connection = True  # an unread body would be parsed as the next request
        parts = [
            _STATUS_LINES[status],
            b"Content-Type: application/json\r\nContent-Length: ",
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
        self._log_access(status)

    def _log_access(self, status: int) -> None:
        # Hand-built JSON: this runs for every request, json.dumps of a dict costs more.
        _write_log_line(
            f'{{"ts":"{_timestamp()}","event":"request","method":{json.dumps(self.command or "")},'
            f'"path":{json.dumps(self.path or "")},"status":{status},'
            f'"duration_ms":{(time.perf_counter() - self._started) * 1000:.3f},'
            f'"remote":{json.dumps(self.client_address[0] if self.client_address else "")}}}'
        )

    def log_message(self, format: str, *args: Any) -> None:
        # The stdlib's text log (e.g. "Request timed out") is replaced by the JSON access log.
        pass


# --- entry point ---------------------------------------------------------------------------------


def main() -> int:
    """Serve the configured model until SIGTERM; return the process exit code."""
    try:
        config = ServingConfig.load()
    except ValueError as exc:
        log_event(event="config_error", error=str(exc))
        return 2
    state = ModelState(config)
    try:
        server = ModelServer((config.host, config.port), state)
    except OSError as exc:
        log_event(event="bind_error", host=config.host, port=config.port, error=str(exc))
        return 1

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
    log_event(event="ready", model=config.model_name, port=port, warm_up_ms=round(warm_up_ms, 3))

    stop.wait()
    drained = server.stop()
    log_event(event="stopped", drained=drained)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Serving configuration: the JSON file the image's entrypoint reads at start-up.

The generator renders this file per model spec; the server only loads and validates it.
Loading is strict (unknown fields are errors) and collects every problem into one
``ValueError`` so a bad render is diagnosed in a single run, e.g.::

    serving config /app/serving.json: port: must be an integer in 0..65535, got "80a"
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_ENV = "MODELSTACK_SERVING_CONFIG"
DEFAULT_CONFIG_PATH = "/app/serving.json"
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# Front-end limits (serving.listener, serving.http1): integer fields with their default and allowed range.
LIMITS: dict[str, tuple[int, int, int]] = {
    "max_connections": (1024, 1, 1_000_000),
    "max_buffered_bytes": (64 * 1024 * 1024, 1024, 2**40),
    "max_header_bytes": (64 * 1024, 1024, 16 * 1024 * 1024),
    "max_headers": (100, 4, 10_000),
}
# Timeouts in seconds: a request must be complete this long after its first byte; an idle
# keep-alive connection (or one whose client stopped reading) is closed after this long.
TIMEOUTS: dict[str, tuple[float, float, float]] = {
    "request_timeout_s": (30.0, 0.1, 3600.0),
    "idle_timeout_s": (75.0, 0.1, 86400.0),
}

# dtypes a client may send for an input; the runtime casts or quantizes them to the
# model's tensor type.
SUPPORTED_DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64", "string")

# The name appears in URL paths (/v1/models/<name>:predict), so ':' and '/' must not occur.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# What the served model does (the spec's model.task); it selects the serving family
# (serving/families.py): how requests become model calls.
TASKS = ("predict", "sentence-embedding", "text-classification", "text-generation", "speech-recognition")

_TOP_LEVEL_FIELDS = (
    "model_name", "artifact", "host", "port", "threads", "inputs", "max_body_bytes", "metadata",
    "runtime", "max_batch_size", "max_latency_ms", "api_key_env", *LIMITS, *TIMEOUTS,
    "grpc_port", "task",
)
# "auto" picks the runtime from the artifact's suffix: .onnx -> onnx, anything else -> litert.
RUNTIMES = ("auto", "litert", "onnx")
MAX_BATCH_SIZE = 1024
# The API key's environment variable must look like one (it is read at start-up, never stored).
_ENV_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_INPUT_FIELDS = ("name", "shape", "dtype")

# Stands for "field absent", which is reported once as missing rather than as a bad value.
_MISSING: Any = object()


@dataclass(frozen=True)
class InputSpec:
    """One model input as clients send it: shape excludes the batch dimension."""

    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class ServingConfig:
    """Everything the server needs to know about the one model it serves."""

    model_name: str
    artifact: str
    inputs: list[InputSpec]
    port: int = 8501
    threads: int = 1
    host: str = "0.0.0.0"
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    metadata: dict[str, Any] = field(default_factory=dict)
    runtime: str = "auto"
    task: str = "predict"  # one of TASKS
    # Dynamic batching: requests queue up to max_latency_ms and run together up to
    # max_batch_size samples; max_batch_size 0 or 1 turns it off. With max_latency_ms 0 a batch
    # holds whatever queued while the previous batch ran (no added wait).
    max_batch_size: int = 1
    max_latency_ms: float = 0.0
    # Name of the environment variable holding the API key; None = no authentication.
    api_key_env: str | None = None
    # The Open Inference Protocol's gRPC service on this port (0: an ephemeral one); None = off.
    grpc_port: int | None = None
    # Front-end limits: over max_connections or max_buffered_bytes (request bytes held across
    # all connections) a client gets 503 with Retry-After; over the head limits 431.
    max_connections: int = LIMITS["max_connections"][0]
    max_buffered_bytes: int = LIMITS["max_buffered_bytes"][0]
    max_header_bytes: int = LIMITS["max_header_bytes"][0]
    max_headers: int = LIMITS["max_headers"][0]
    request_timeout_s: float = TIMEOUTS["request_timeout_s"][0]
    idle_timeout_s: float = TIMEOUTS["idle_timeout_s"][0]

    @property
    def batching_enabled(self) -> bool:
        """Requests are batched when more than one sample may run together."""
        return self.max_batch_size > 1

    @property
    def resolved_runtime(self) -> str:
        """"litert" or "onnx": the config's choice, or the artifact's suffix for "auto"."""
        if self.runtime != "auto":
            return self.runtime
        return "onnx" if self.artifact.lower().endswith(".onnx") else "litert"

    @property
    def input(self) -> InputSpec:
        """The first input: the only one, except for models with several (``serving.multi``)."""
        return self.inputs[0]

    @classmethod
    def from_dict(cls, data: Any, source: str = "serving config") -> ServingConfig:
        """Validate a parsed JSON document; raise ValueError listing every problem."""
        errors: list[str] = []
        if not isinstance(data, dict):
            raise ValueError(f"{source}: must be a JSON object, got {_kind(data)}")
        for key in sorted(set(data) - set(_TOP_LEVEL_FIELDS)):
            errors.append(f"{key}: unknown field; allowed fields are {', '.join(_TOP_LEVEL_FIELDS)}")
        for key in ("model_name", "artifact", "inputs"):
            if key not in data:
                errors.append(f"{key}: required field is missing")

        model_name = _check_name(data.get("model_name", _MISSING), "model_name", errors)
        artifact = _check_str(data.get("artifact", _MISSING), "artifact", errors)
        host = _check_str(data.get("host", "0.0.0.0"), "host", errors)
        port = _check_int(data.get("port", 8501), "port", 0, 65535, errors)
        threads = _check_int(data.get("threads", 1), "threads", 1, 1024, errors)
        max_body = _check_int(
            data.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES), "max_body_bytes", 1, 2**31, errors
        )
        inputs = _check_inputs(data.get("inputs", _MISSING), errors)
        metadata = data.get("metadata", {})
        if not isinstance(metadata, dict):
            errors.append(f"metadata: must be a JSON object, got {_kind(metadata)}")
        runtime = data.get("runtime", "auto")
        if runtime not in RUNTIMES:
            errors.append(f"runtime: must be one of {', '.join(RUNTIMES)}, got {_show(runtime)}")
        task = data.get("task", "predict")
        if task not in TASKS:
            errors.append(f"task: must be one of {', '.join(TASKS)}, got {_show(task)}")
        max_batch = _check_int(
            data.get("max_batch_size", 1), "max_batch_size", 0, MAX_BATCH_SIZE, errors
        )
        max_latency = data.get("max_latency_ms", 0)
        if (
            isinstance(max_latency, bool)
            or not isinstance(max_latency, (int, float))
            or not 0 <= max_latency <= 10_000
        ):
            errors.append(f"max_latency_ms: must be a number in 0..10000, got {_show(max_latency)}")
            max_latency = 0
        api_key_env = data.get("api_key_env")
        if api_key_env is not None and not (
            isinstance(api_key_env, str) and _ENV_RE.match(api_key_env)
        ):
            errors.append(
                f"api_key_env: must be null or an environment variable name, got {_show(api_key_env)}"
            )

        grpc_port = data.get("grpc_port")
        if grpc_port is not None:
            grpc_port = _check_int(grpc_port, "grpc_port", 0, 65535, errors)
            if grpc_port and grpc_port == port:
                errors.append(f"grpc_port: must differ from port ({port}), got {grpc_port}")

        limits = {
            key: _check_int(data.get(key, default), key, low, high, errors)
            for key, (default, low, high) in LIMITS.items()
        }
        timeouts = {
            key: _check_number(data.get(key, default), key, low, high, errors)
            for key, (default, low, high) in TIMEOUTS.items()
        }
        if not errors and limits["max_buffered_bytes"] < max_body:
            errors.append(
                f"max_buffered_bytes: must be at least max_body_bytes ({max_body}), "
                f"got {limits['max_buffered_bytes']}"
            )

        if errors:
            raise ValueError(f"{source}: " + f"\n{source}: ".join(errors))
        return cls(
            model_name=model_name, artifact=artifact, inputs=inputs, port=port, threads=threads,
            host=host, max_body_bytes=max_body, metadata=metadata, runtime=runtime, task=task,
            max_batch_size=max(max_batch, 1), max_latency_ms=float(max_latency),
            api_key_env=api_key_env, **limits, **timeouts, grpc_port=grpc_port,
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> ServingConfig:
        """Read the config from ``path``, else ``$MODELSTACK_SERVING_CONFIG``, else /app/serving.json."""
        resolved = Path(path or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
        source = f"serving config {resolved}"
        try:
            text = resolved.read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{source}: cannot read file: {exc.strerror or exc}") from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{source}: not valid JSON: {exc}") from exc
        return cls.from_dict(data, source)


def _kind(value: Any) -> str:
    """A JSON-ish name for a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _show(value: Any) -> str:
    """Render a bad value the way it looks in the JSON file."""
    return json.dumps(value, default=repr)


def _check_str(value: Any, where: str, errors: list[str]) -> str:
    if value is _MISSING:
        return ""
    if not isinstance(value, str) or not value:
        errors.append(f"{where}: must be a non-empty string, got {_show(value)}")
        return ""
    return value


def _check_name(value: Any, where: str, errors: list[str]) -> str:
    name = _check_str(value, where, errors)
    if name and not _NAME_RE.match(name):
        errors.append(
            f"{where}: {_show(name)} is not a valid name; use letters, digits, '.', '_' "
            "and '-' (it appears in URL paths)"
        )
    return name


def _check_int(value: Any, where: str, low: int, high: int, errors: list[str]) -> int:
    # bool is a subclass of int; `true` is not a port number.
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        errors.append(f"{where}: must be an integer in {low}..{high}, got {_show(value)}")
        return low
    return value


def _check_number(value: Any, where: str, low: float, high: float, errors: list[str]) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        errors.append(f"{where}: must be a number in {low:g}..{high:g}, got {_show(value)}")
        return low
    return float(value)


def _check_inputs(value: Any, errors: list[str]) -> list[InputSpec]:
    if value is _MISSING:
        return []
    if not isinstance(value, list):
        errors.append(f"inputs: must be a list of inputs, got {_kind(value)}")
        return []
    if not value:
        errors.append("inputs: must list at least one input, got an empty list")
    specs = [spec for i, item in enumerate(value) if (spec := _check_input(item, i, errors))]
    names = [spec.name for spec in specs]
    for name in sorted({n for n in names if names.count(n) > 1}):
        errors.append(f"inputs: the name {_show(name)} is given more than once; each input needs its own name")
    if len(value) > 1 and any(spec.dtype == "string" for spec in specs):
        errors.append("inputs: a text model takes one string input; a model with several inputs takes numeric ones")
    return specs


def _check_input(item: Any, index: int, errors: list[str]) -> InputSpec | None:
    where = f"inputs[{index}]"
    if not isinstance(item, dict):
        errors.append(f"{where}: must be an object with name, shape and dtype, got {_kind(item)}")
        return None
    before = len(errors)
    for key in sorted(set(item) - set(_INPUT_FIELDS)):
        errors.append(f"{where}.{key}: unknown field; allowed fields are name, shape, dtype")
    for key in _INPUT_FIELDS:
        if key not in item:
            errors.append(f"{where}.{key}: required field is missing")
    name = _check_name(item.get("name", _MISSING), f"{where}.name", errors)
    shape = item.get("shape", _MISSING)
    if shape is not _MISSING and not (
        isinstance(shape, list)
        and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        errors.append(
            f"{where}.shape: must be a list of positive integers without the batch dimension, "
            f"e.g. [64], got {_show(shape)}"
        )
    dtype = item.get("dtype", _MISSING)
    if dtype is not _MISSING and dtype not in SUPPORTED_DTYPES:
        errors.append(
            f"{where}.dtype: {_show(dtype)} is not supported; use one of "
            f"{', '.join(SUPPORTED_DTYPES)}"
        )
    if len(errors) != before:
        return None
    return InputSpec(name=name, shape=tuple(shape), dtype=dtype)

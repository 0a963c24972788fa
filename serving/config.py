"""Serving configuration: the JSON file the image's entrypoint reads at start-up.

The generator renders this file per model spec; the server only loads and validates it.
Loading is strict (unknown fields are errors) and collects every problem into one
``ValueError`` so a bad render is diagnosed in a single run, e.g.::

    serving config /app/serving.json: port: must be an integer in 1024..65535 (or 0: any free port), got "80a"

This module owns every default and bound of the settings a user writes in the spec's
``serving`` section (``SETTINGS``): the spec's pydantic model (``iac/spec/models.py``) is built
from these constants, so a value the spec accepts is a value the server accepts, and the reverse
(``tests/spec/test_serving_schema.py`` checks every field both ways). Plain stdlib: the image
carries no pydantic.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from serving import families

T = TypeVar("T")


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting of the spec's ``serving`` section: its default, its bounds (numbers) or pattern
    (names), and what it does (the spec's field description)."""

    default: T
    description: str
    low: float | None = None
    high: float | None = None
    integer: bool = True  # a whole number (else any number in the bounds)
    nullable: bool = False  # null is a value (off)
    pattern: str | None = None  # a text setting: the regular expression it must match in full
    choices: tuple[str, ...] = ()  # a text setting: one of these words
    # A port: the server also takes 0, any free port (tests and benchmarks run several servers);
    # the spec does not, as a container's port must be known to publish it.
    ephemeral: bool = False


DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
# The API key's environment variable, in the form environment names are written (read at start-up, never stored).
API_KEY_ENV_PATTERN = r"[A-Z_][A-Z0-9_]{0,127}"

PORT: Setting[int] = Setting(8501, "Port the server listens on inside the container", 1024, 65535, ephemeral=True)
GRPC_PORT: Setting[int | None] = Setting(
    8001,
    "Port of the Open Inference Protocol gRPC service (inference.GRPCInferenceService) inside the container, "
    "beside the HTTP port; null turns it off",
    1024,
    65535,
    nullable=True,
    ephemeral=True,
)
THREADS: Setting[int] = Setting(1, "Runtime threads per inference (LiteRT interpreter / ONNX Runtime intra-op)", 1, 64)
MAX_BATCH_SIZE_SETTING: Setting[int] = Setting(
    1, "Dynamic batching: most samples run in one inference; 0 or 1 turns batching off", 0, 1024
)
MAX_LATENCY_MS: Setting[float] = Setting(
    0.0,
    "Dynamic batching: longest a request waits for others to join its batch; 0 = no waiting, a batch holds "
    "what queued during the previous one",
    0.0,
    10_000.0,
    integer=False,
)
MAX_BODY_BYTES: Setting[int] = Setting(
    DEFAULT_MAX_BODY_BYTES, "Largest request body accepted; bigger ones get 413", 1024, 256 * 1024**2
)
API_KEY_ENV: Setting[str | None] = Setting(
    None,
    "Require an API key (Authorization: Bearer or X-API-Key) on every route but the health checks; the key "
    "is read from this environment variable when the container starts, never stored in the image "
    "(e.g. MODELSTACK_API_KEY)",
    nullable=True,
    pattern=API_KEY_ENV_PATTERN,
)
MAX_CONNECTIONS: Setting[int] = Setting(
    1024, "Connections open at once; a connection over this gets 503 with Retry-After", 1, 1_000_000
)
MAX_BUFFERED_BYTES: Setting[int] = Setting(
    64 * 1024**2,
    "Request bytes held across all connections (heads, bodies, announced Content-Lengths); a request "
    "over this gets 503 with Retry-After. At least max_body_bytes",
    1024,
    2**40,
)
MAX_HEADER_BYTES: Setting[int] = Setting(
    64 * 1024, "Request line and header fields of one request; longer heads get 431", 1024, 16 * 1024**2
)
MAX_HEADERS: Setting[int] = Setting(100, "Header fields of one request; more get 431", 4, 10_000)
REQUEST_TIMEOUT_S: Setting[float] = Setting(
    30.0, "Seconds a request may take to arrive, from its first byte; slower ones get 408", 0.1, 3600.0, integer=False
)
IDLE_TIMEOUT_S: Setting[float] = Setting(
    75.0,
    "Seconds an idle keep-alive connection (or one whose client stopped reading) stays open",
    0.1,
    86400.0,
    integer=False,
)

MAX_AUDIO_SECONDS: Setting[float] = Setting(
    600.0,
    "Speech recognition: longest audio accepted per request, in seconds; longer gets 413 (decoding stops at the limit)",
    1.0,
    86400.0,
    integer=False,
)

# Text generation (task text-generation, serving.generate): the KV cache holds context_length x
# max_sequences tokens, so these two size the replica's memory.
MAX_SEQUENCES: Setting[int] = Setting(
    4, "Text generation: sequences decoded together (continuous batching); each has its own KV cache", 1, 256
)
MAX_QUEUED_SEQUENCES: Setting[int] = Setting(
    64, "Text generation: requests that may wait for a free sequence; more get 503 with Retry-After", 0, 100_000
)
CONTEXT_LENGTH: Setting[int] = Setting(
    0, "Text generation: each sequence's context in tokens; 0 = the model's training context", 0, 1_048_576
)
# How llama.cpp's threads wait at the barrier after each graph node (serving/generate/cpu_wait.py).
CPU_WAIT: Setting[str] = Setting(
    "auto",
    "Text generation: how the runtime's threads wait for each other within a step. spin: fastest on cores "
    "the replica has to itself (llama.cpp's default); sleep: safe on cores shared with other busy "
    "processes; auto: spin when the replica may use more CPUs than serving.threads, else sleep",
    choices=("auto", "spin", "sleep"),
)

# The spec's serving section, field by field, in the order the spec lists them.
SETTINGS: dict[str, Setting[Any]] = {
    "port": PORT,
    "grpc_port": GRPC_PORT,
    "threads": THREADS,
    "max_batch_size": MAX_BATCH_SIZE_SETTING,
    "max_latency_ms": MAX_LATENCY_MS,
    "max_body_bytes": MAX_BODY_BYTES,
    "api_key_env": API_KEY_ENV,
    "max_connections": MAX_CONNECTIONS,
    "max_buffered_bytes": MAX_BUFFERED_BYTES,
    "max_header_bytes": MAX_HEADER_BYTES,
    "max_headers": MAX_HEADERS,
    "request_timeout_s": REQUEST_TIMEOUT_S,
    "idle_timeout_s": IDLE_TIMEOUT_S,
    "max_audio_seconds": MAX_AUDIO_SECONDS,
    "max_sequences": MAX_SEQUENCES,
    "max_queued_sequences": MAX_QUEUED_SEQUENCES,
    "context_length": CONTEXT_LENGTH,
    "cpu_wait": CPU_WAIT,
}


CONFIG_ENV = "MODELSTACK_SERVING_CONFIG"
DEFAULT_CONFIG_PATH = "/app/serving.json"
MAX_BATCH_SIZE = int(MAX_BATCH_SIZE_SETTING.high or 0)

# dtypes a client may send for an input; the runtime casts or quantizes them to the
# model's tensor type.
SUPPORTED_DTYPES = ("float32", "float16", "int8", "uint8", "int16", "int32", "int64", "string")

# What an integer input's ``range`` may span (numpy's iinfo, without importing numpy here).
_INTEGER_LIMITS = {
    "int8": (-(2**7), 2**7 - 1),
    "uint8": (0, 2**8 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}

# The name appears in URL paths (/v1/models/<name>:predict), so ':' and '/' must not occur.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")

# What the generator adds to the spec's serving section: the model, its task (the serving
# family, serving/families.py), where the server runs and how long it drains on SIGTERM (the
# deploy target's stop grace period is sized from the same figure).
_MODEL_FIELDS = ("task", "model_name", "artifact", "host", "inputs", "metadata", "runtime", "drain_timeout_s")
# SIGTERM waits this long for in-flight requests unless the model needs longer (e.g. streams of
# generated text: the generator writes drain_timeout_s); Docker's default stop timeout is 10 s.
DEFAULT_DRAIN_TIMEOUT_S = 9.0
MAX_DRAIN_TIMEOUT_S = 3600.0
_TOP_LEVEL_FIELDS = (*_MODEL_FIELDS, *SETTINGS)
# The predict family's runtimes (serving.predict checks them; other families name their own).
# "auto" picks the runtime from the artifact's suffix: .onnx -> onnx, anything else -> litert.
RUNTIMES = ("auto", "litert", "onnx")
_INPUT_FIELDS = ("name", "shape", "dtype")
_OPTIONAL_INPUT_FIELDS = ("range",)

# Stands for "field absent", which is reported once as missing rather than as a bad value.
_MISSING: Any = object()


@dataclass(frozen=True)
class InputSpec:
    """One model input as clients send it: shape excludes the batch dimension."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    # Integer inputs: the values the model accepts, both ends included (e.g. an embedding's ids,
    # 0..vocabulary-1). Others get a 400 naming the input and the item, never a failed batch or,
    # for a negative id, a silently wrong answer. None: the dtype's whole range.
    range: tuple[int, int] | None = None


@dataclass(frozen=True)
class ServingConfig:
    """Everything the server needs to know about the one model it serves."""

    model_name: str
    artifact: str
    inputs: list[InputSpec]
    # Which serving family answers (serving.families): its runtime and its routes.
    task: str = families.DEFAULT_TASK
    port: int = PORT.default
    threads: int = THREADS.default
    host: str = "0.0.0.0"
    max_body_bytes: int = MAX_BODY_BYTES.default
    metadata: dict[str, Any] = field(default_factory=dict)
    runtime: str = "auto"
    # Dynamic batching: requests queue up to max_latency_ms and run together up to
    # max_batch_size samples; max_batch_size 0 or 1 turns it off. With max_latency_ms 0 a batch
    # holds whatever queued while the previous batch ran (no added wait).
    max_batch_size: int = MAX_BATCH_SIZE_SETTING.default
    max_latency_ms: float = MAX_LATENCY_MS.default
    # Name of the environment variable holding the API key; None = no authentication.
    api_key_env: str | None = API_KEY_ENV.default
    # The Open Inference Protocol's gRPC service on this port (0: an ephemeral one); None = off.
    grpc_port: int | None = GRPC_PORT.default
    # Front-end limits: over max_connections or max_buffered_bytes (request bytes held across
    # all connections) a client gets 503 with Retry-After; over the head limits 431.
    max_connections: int = MAX_CONNECTIONS.default
    max_buffered_bytes: int = MAX_BUFFERED_BYTES.default
    max_header_bytes: int = MAX_HEADER_BYTES.default
    max_headers: int = MAX_HEADERS.default
    request_timeout_s: float = REQUEST_TIMEOUT_S.default
    idle_timeout_s: float = IDLE_TIMEOUT_S.default
    max_audio_seconds: float = MAX_AUDIO_SECONDS.default
    max_sequences: int = MAX_SEQUENCES.default
    max_queued_sequences: int = MAX_QUEUED_SEQUENCES.default
    context_length: int = CONTEXT_LENGTH.default
    cpu_wait: str = CPU_WAIT.default
    drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S

    @property
    def batching_enabled(self) -> bool:
        """Requests are batched when more than one sample may run together."""
        return self.max_batch_size > 1

    @property
    def resolved_runtime(self) -> str:
        """ "litert" or "onnx": the config's choice, or the artifact's suffix for "auto"."""
        if self.runtime != "auto":
            return self.runtime
        return "onnx" if self.artifact.lower().endswith(".onnx") else "litert"

    @property
    def input(self) -> InputSpec:
        """The first input: the only one, except for models with several (``serving.request``)."""
        return self.inputs[0]

    @classmethod
    def from_dict(cls, data: Any, source: str = "serving config") -> ServingConfig:
        """Validate a parsed JSON document; raise ValueError listing every problem."""
        errors: list[str] = []
        if not isinstance(data, dict):
            raise ValueError(f"{source}: must be a JSON object, got {_kind(data)}")
        for key in sorted(set(data) - set(_TOP_LEVEL_FIELDS)):
            errors.append(f"{key}: unknown field; allowed fields are {', '.join(_TOP_LEVEL_FIELDS)}")
        for key in ("model_name", "artifact"):
            if key not in data:
                errors.append(f"{key}: required field is missing")
        task = data.get("task", families.DEFAULT_TASK)
        if isinstance(task, str) and task in families.FAMILIES:
            errors.extend(families.check(task, data))  # what only the task's family knows (e.g. inputs)
        else:
            errors.append(f"task: must be one of {', '.join(families.FAMILIES)}, got {_show(task)}")

        model_name = _check_name(data.get("model_name", _MISSING), "model_name", errors)
        artifact = _check_str(data.get("artifact", _MISSING), "artifact", errors)
        host = _check_str(data.get("host", "0.0.0.0"), "host", errors)
        inputs = _check_inputs(data.get("inputs", _MISSING), errors)
        metadata = data.get("metadata", {})
        if not isinstance(metadata, dict):
            errors.append(f"metadata: must be a JSON object, got {_kind(metadata)}")
        runtime = _check_str(data.get("runtime", "auto"), "runtime", errors)  # which ones: the family's check
        drain = data.get("drain_timeout_s", DEFAULT_DRAIN_TIMEOUT_S)
        if isinstance(drain, bool) or not isinstance(drain, int | float) or not 0 < drain <= MAX_DRAIN_TIMEOUT_S:
            errors.append(f"drain_timeout_s: must be seconds in (0, {MAX_DRAIN_TIMEOUT_S:g}], got {_show(drain)}")
        settings = {
            name: check_setting(name, data.get(name, setting.default), errors) for name, setting in SETTINGS.items()
        }
        port, grpc_port = settings["port"], settings["grpc_port"]
        if grpc_port and grpc_port == port:
            errors.append(f"grpc_port: must differ from port ({port}), got {grpc_port}")
        if not errors and settings["max_buffered_bytes"] < settings["max_body_bytes"]:
            errors.append(
                f"max_buffered_bytes: must be at least max_body_bytes ({settings['max_body_bytes']}), "
                f"got {settings['max_buffered_bytes']}"
            )

        if errors:
            raise ValueError(f"{source}: " + f"\n{source}: ".join(errors))
        settings["max_batch_size"] = max(settings["max_batch_size"], 1)
        settings["max_latency_ms"] = float(settings["max_latency_ms"])
        return cls(
            model_name=model_name,
            artifact=artifact,
            inputs=inputs,
            task=task,
            host=host,
            metadata=metadata,
            runtime=runtime,
            drain_timeout_s=float(drain),
            **settings,
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


def check_setting(name: str, value: Any, errors: list[str]) -> Any:
    """``value`` if it is a valid value of the setting ``name`` (``SETTINGS``); else its default,
    with the problem added to ``errors``."""
    setting = SETTINGS[name]
    if value is None and setting.nullable:
        return None
    if setting.choices:
        if isinstance(value, str) and value in setting.choices:
            return value
        errors.append(f"{name}: must be one of {', '.join(setting.choices)}, got {_show(value)}")
        return setting.default
    if setting.pattern is not None:
        if isinstance(value, str) and re.fullmatch(setting.pattern, value):
            return value
        errors.append(
            f"{name}: must be {'null or ' if setting.nullable else ''}an environment variable name "
            f"(upper-case letters, digits and '_'), got {_show(value)}"
        )
        return setting.default
    assert setting.low is not None and setting.high is not None  # a number setting has bounds
    if setting.integer and isinstance(value, float) and value.is_integer():
        value = int(value)  # 8501.0, as JSON tools (and Pulumi state) may write a whole number
    whole = isinstance(value, int) or (not setting.integer and isinstance(value, float))
    if (
        not isinstance(value, bool)
        and whole
        and (setting.low <= value <= setting.high or (setting.ephemeral and value == 0))
    ):
        return value if setting.integer else float(value)
    kind = "an integer" if setting.integer else "a number"
    also = [*(["0: any free port"] if setting.ephemeral else []), *(["null: off"] if setting.nullable else [])]
    errors.append(
        f"{name}: must be {kind} in {setting.low:g}..{setting.high:g}"
        f"{' (or ' + '; or '.join(also) + ')' if also else ''}, got {_show(value)}"
    )
    return setting.default


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


def _check_inputs(value: Any, errors: list[str]) -> list[InputSpec]:
    if value is _MISSING:
        return []
    if not isinstance(value, list):
        errors.append(f"inputs: must be a list of inputs, got {_kind(value)}")
        return []
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
    for key in sorted(set(item) - set(_INPUT_FIELDS) - set(_OPTIONAL_INPUT_FIELDS)):
        errors.append(f"{where}.{key}: unknown field; allowed fields are name, shape, dtype, range")
    for key in _INPUT_FIELDS:
        if key not in item:
            errors.append(f"{where}.{key}: required field is missing")
    name = _check_name(item.get("name", _MISSING), f"{where}.name", errors)
    shape = item.get("shape", _MISSING)
    if shape is not _MISSING and not (
        isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape)
    ):
        errors.append(
            f"{where}.shape: must be a list of positive integers without the batch dimension, "
            f"e.g. [64], got {_show(shape)}"
        )
    dtype = item.get("dtype", _MISSING)
    if dtype is not _MISSING and dtype not in SUPPORTED_DTYPES:
        errors.append(f"{where}.dtype: {_show(dtype)} is not supported; use one of {', '.join(SUPPORTED_DTYPES)}")
    value_range = _check_range(item.get("range"), dtype, f"{where}.range", errors)
    if len(errors) != before:
        return None
    return InputSpec(name=name, shape=tuple(shape), dtype=dtype, range=value_range)


def _check_range(value: Any, dtype: Any, where: str, errors: list[str]) -> tuple[int, int] | None:
    """``[low, high]``, both ends included, for an integer input; within its dtype."""
    if value is None:
        return None
    if dtype not in _INTEGER_LIMITS:
        errors.append(
            f"{where}: applies to integer inputs only (int8 .. int64, uint8); remove it for dtype {_show(dtype)}"
        )
        return None
    low_limit, high_limit = _INTEGER_LIMITS[dtype]
    if not (
        isinstance(value, list)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and low_limit <= value[0] <= value[1] <= high_limit
    ):
        errors.append(
            f"{where}: must be [low, high], integers with low <= high within {dtype} "
            f"({low_limit}..{high_limit}), e.g. [0, 199] for 200 ids; got {_show(value)}"
        )
        return None
    return value[0], value[1]

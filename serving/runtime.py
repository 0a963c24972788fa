"""Model runtimes: LiteRT (.tflite) and ONNX Runtime (.onnx), behind one small interface.

Both classes offer what the server and the batcher need: ``feeds`` (each input under the name
requests give it, with its per-sample shape, -1 for a dynamic dimension, and dtype),
``output_shape``, ``output_dtype``, ``platform``, ``predict(batch)`` (thread-safe) and
``warm_up(batch_sizes)``. A model with one input is the case of a list of one: ``predict`` takes
the batch ``serving.request.bind`` makes (``serving.feeds``: a plain array for one input, a
structured array for several) and reads each input from it by name.
``serving.loading.load_runtime`` picks one from the config (``runtime``, or the artifact's
suffix). modelprep measures every variant through these same classes (``from_bytes``), so the
gate judges the outputs the server gives.

``LiteRTModel`` hides the TFLite tensor plumbing: it quantizes float inputs for int8/uint8
tensors, dequantizes a quantized output, and keeps one interpreter per batch-size bucket (powers
of two up to ``max_bucket``) so that batches of varying size never pay for
``resize_tensor_input`` + ``allocate_tensors`` (which reallocates every tensor): a batch of n
runs on the interpreter of the smallest bucket >= n, padded with zero rows that are dropped from
the output. Each interpreter has its own lock (an interpreter is not re-entrant). The model must
have exactly one output tensor.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from serving.feeds import pair, unpack, zeros

if TYPE_CHECKING:
    from serving.config import InputSpec

# Batches above the largest bucket are split into chunks of that size.
DEFAULT_MAX_BUCKET = 64


@dataclass(frozen=True)
class Feed:
    """One input of a loaded model, under the name requests give it."""

    name: str
    shape: tuple[int, ...]  # per sample (no batch dimension); -1 marks a dynamic dimension
    dtype: np.dtype[Any]  # the tensor's (int8/uint8 for a fully quantized model; object for texts)
    quantized: bool = False  # float values are quantized with the tensor's scale and zero point


class Runtime(Protocol):
    """What the server needs from a loaded model."""

    platform: str

    @property
    def feeds(self) -> tuple[Feed, ...]: ...
    @property
    def output_shape(self) -> tuple[int, ...]: ...
    @property
    def output_dtype(self) -> np.dtype[Any]: ...
    def predict(self, batch: np.ndarray) -> np.ndarray: ...
    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> np.ndarray: ...


def artifact_bytes(path: Path, content: bytes | None) -> bytes:
    """The model file's bytes (``content`` when given, e.g. a variant measured in memory)."""
    if content is not None:
        return content
    if not path.is_file():
        raise FileNotFoundError(f"model artifact {path} does not exist")
    return path.read_bytes()


def bucket_for(n: int) -> int:
    """The smallest power of two >= n."""
    return 1 << max(n - 1, 0).bit_length()


def request_names(model: Sequence[str], inputs: Sequence[InputSpec] | None, where: Path) -> list[tuple[str, str]]:
    """(the model's name, the name requests give it) of each input, in the config's order
    (``serving.feeds.pair``); the model's own names, in its order, when no config is given."""
    if inputs is None:
        return [(name, name) for name in model]
    pairs = pair(model, [spec.name for spec in inputs], f"model artifact {where}")
    return [(pairs[spec.name], spec.name) for spec in inputs]


class _Input:
    """One input tensor of the interpreter: where it goes, its dtype and its quantization."""

    __slots__ = ("dtype", "feed", "index", "name", "sample", "scale", "zero")

    def __init__(self, name: str, details: dict[str, Any]) -> None:
        self.name = name
        self.index: int = details["index"]
        self.dtype: np.dtype[Any] = np.dtype(details["dtype"])
        self.scale, self.zero = tensor_quantization(details)
        self.sample = tuple(max(int(d), 1) for d in details["shape"][1:])  # the shape buckets resize to
        shape = tuple(int(d) for d in details.get("shape_signature", details["shape"])[1:])
        self.feed = Feed(name, shape, self.dtype, self.scale != 0.0)

    def tensor(self, values: np.ndarray) -> np.ndarray:
        """Values as the tensor takes them: float values quantized for a quantized tensor."""
        if self.scale != 0.0 and values.dtype.kind == "f":
            return quantize(values, self.dtype, self.scale, self.zero)
        return np.ascontiguousarray(values, dtype=self.dtype)


class _Slot:
    """One interpreter allocated for a fixed batch size, with its lock."""

    __slots__ = ("interpreter", "lock", "size")

    def __init__(self, interpreter: Any, size: int) -> None:
        self.interpreter = interpreter
        self.lock = threading.Lock()
        self.size = size


class LiteRTModel:
    """A .tflite model ready to run batches; ``predict`` may be called from any thread.

    ``inputs`` (the config's) names the model's inputs as requests do (``request_names``); without
    it they keep the model's own names (the signature's, else the tensors')."""

    platform = "tensorflow_lite"
    labels: tuple[str, ...] = ()  # no class names (a text classifier has them); read per request

    def __init__(
        self,
        path: str | os.PathLike[str],
        num_threads: int = 1,
        max_bucket: int = DEFAULT_MAX_BUCKET,
        content: bytes | None = None,
        inputs: Sequence[InputSpec] | None = None,
    ) -> None:
        # Imported here so importing this module (e.g. for config checks) stays cheap.
        from ai_edge_litert.interpreter import Interpreter

        model_path = Path(path)
        content = artifact_bytes(model_path, content)
        self.path = model_path
        self.num_threads = num_threads
        self._content = content  # shared by every bucket's interpreter
        self._make = lambda: Interpreter(model_content=self._content, num_threads=num_threads)
        interpreter = self._make()
        details = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
        if len(outputs) != 1:
            raise ValueError(f"model artifact {model_path}: expected one output tensor, found {len(outputs)}")
        own = _input_names(interpreter, details)
        by_name = {own[int(d["index"])]: d for d in details}
        self._inputs = tuple(
            _Input(name, by_name[model]) for model, name in request_names(list(by_name), inputs, model_path)
        )
        self._feeds = tuple(spec.feed for spec in self._inputs)
        self._names = tuple(spec.name for spec in self._inputs)
        self._output = outputs[0]
        self._output_index: int = self._output["index"]
        self._out_scale, self._out_zero = tensor_quantization(self._output)
        # A model exported with a fixed batch (of 1) cannot be resized: it runs samples one by one.
        self._dynamic_batch = all(_dynamic_batch(d) for d in details)
        self.max_bucket = bucket_for(max_bucket) if self._dynamic_batch else 1
        self._slots: dict[int, _Slot] = {}
        self._slots_lock = threading.Lock()
        interpreter.allocate_tensors()
        first = int(details[0]["shape"][0]) if len(details[0]["shape"]) else 1
        self._slots[first] = _Slot(interpreter, first)

    @classmethod
    def from_bytes(
        cls,
        content: bytes,
        num_threads: int = 1,
        max_bucket: int = DEFAULT_MAX_BUCKET,
        inputs: Sequence[InputSpec] | None = None,
    ) -> LiteRTModel:
        """The same model from the artifact's bytes (what modelprep measures before anything is written)."""
        return cls("<memory>.tflite", num_threads=num_threads, max_bucket=max_bucket, content=content, inputs=inputs)

    @property
    def feeds(self) -> tuple[Feed, ...]:
        """Each input, under the name requests give it, in the config's order."""
        return self._feeds

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-sample output shape (no batch dimension); -1 marks a dynamic dimension."""
        signature = self._output.get("shape_signature", self._output["shape"])
        return tuple(int(d) for d in signature[1:])

    @property
    def output_dtype(self) -> np.dtype[Any]:
        """The dtype ``predict`` returns: float32 for quantized outputs, else the tensor's."""
        dtype: np.dtype[Any] = np.dtype(np.float32 if self._out_scale else self._output["dtype"])
        return dtype

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Run a batch (first axis = samples; ``serving.feeds``) and return the output batch.

        Float values for a quantized input tensor are quantized; values already in the tensor's
        dtype are passed through as they are.
        """
        batch = np.asarray(batch)
        if batch.ndim == 0 or batch.shape[0] == 0:
            raise ValueError(f"predict needs a batch with at least one sample, got shape {batch.shape}")
        values = unpack(batch, self._names)
        tensors = [spec.tensor(values[spec.name]) for spec in self._inputs]
        n = batch.shape[0]
        step = self.max_bucket
        if n <= step:
            raw = self._run(tensors, n)
        else:
            raw = np.concatenate(
                [self._run([t[i : i + step] for t in tensors], min(step, n - i)) for i in range(0, n, step)]
            )
        return dequantize(raw, self._out_scale, self._out_zero)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> np.ndarray:
        """Run zero-filled batches so requests do not pay for lazy initialization.

        Each size allocates (and runs once) the interpreter of its bucket.
        """
        # Float zeros for a quantized input, as requests bring them: the timed warm-up
        # (serving.loading.single_sample_cost) includes the quantization they pay for.
        sample = [Feed(f.name, f.shape, _FLOAT32) if f.quantized else f for f in self._feeds]
        result = np.zeros(0)
        for size in batch_sizes:
            result = self.predict(zeros(sample, size))
        return result

    def _run(self, tensors: list[np.ndarray], n: int) -> np.ndarray:
        if not self._dynamic_batch:
            slot = self._slots[next(iter(self._slots))]
            if n == 1:
                return self._invoke(slot, tensors)
            return np.concatenate([self._invoke(slot, [t[i : i + 1] for t in tensors]) for i in range(n)])
        size = n if n & (n - 1) == 0 else bucket_for(n)  # a power of two is its own bucket
        slot = self._slots.get(size) or self._new_slot(size)
        if size != n:
            return self._invoke(slot, [_padded(t, size) for t in tensors])[:n]
        return self._invoke(slot, tensors)

    def _new_slot(self, size: int) -> _Slot:
        with self._slots_lock:
            slot = self._slots.get(size)
            if slot is None:
                interpreter = self._make()
                for spec in self._inputs:
                    interpreter.resize_tensor_input(spec.index, [size, *spec.sample])
                interpreter.allocate_tensors()
                slot = self._slots[size] = _Slot(interpreter, size)
            return slot

    def _invoke(self, slot: _Slot, tensors: list[np.ndarray]) -> np.ndarray:
        with slot.lock:
            interpreter = slot.interpreter
            for spec, tensor in zip(self._inputs, tensors):
                interpreter.set_tensor(spec.index, tensor)
            interpreter.invoke()
            output: np.ndarray = interpreter.get_tensor(self._output_index)
            return output  # a copy, so it stays valid after the lock is released


def _input_names(interpreter: Any, details: list[dict[str, Any]]) -> dict[int, str]:
    """Each input tensor's index -> its name: the signature's (the Keras input's name) when the
    model has one signature, else the tensor's own without the converter's decorations."""
    signatures = interpreter.get_signature_list()
    if len(signatures) == 1:
        runner = interpreter.get_signature_runner(next(iter(signatures)))
        named = {int(d["index"]): name for name, d in runner.get_input_details().items()}
        if named.keys() == {int(d["index"]) for d in details}:  # the signature is the main graph's
            return named
    return {int(d["index"]): _plain(d["name"]) for d in details}


def _plain(name: str) -> str:
    """A LiteRT tensor name without the converter's signature prefix and output suffix
    ("serving_default_user_id:0" -> "user_id")."""
    name = name.split(":")[0]
    return name.removeprefix("serving_default_")


def _dynamic_batch(details: dict[str, Any]) -> bool:
    signature = details.get("shape_signature", details["shape"])
    return len(signature) > 0 and int(signature[0]) == -1


def _padded(tensor: np.ndarray, size: int) -> np.ndarray:
    """The tensor with zero rows added up to ``size`` samples."""
    padded = np.zeros((size, *tensor.shape[1:]), dtype=tensor.dtype)
    padded[: len(tensor)] = tensor
    return padded


def quantize(batch: np.ndarray, target: np.dtype[Any], scale: float, zero: int) -> np.ndarray:
    """Float input as the integer tensor: round(x / scale) + zero, clipped to ``target``'s range.

    Written as in-place ufuncs on float32 scalars: on a small batch each numpy call costs more
    than its arithmetic, and ``np.round``/``np.clip``/``np.iinfo`` with Python numbers take several
    times as long as the ufuncs they end in (4.8 against 2.3 us for one 64-value sample). The
    values are the same: float32 arithmetic either way, round half to even.
    """
    low, high = _limits(target)
    scaled = (batch if batch.dtype == _FLOAT32 else batch.astype(_FLOAT32)) / np.float32(scale)
    np.rint(scaled, out=scaled)
    np.add(scaled, np.float32(zero), out=scaled)
    np.maximum(scaled, low, out=scaled)
    np.minimum(scaled, high, out=scaled)
    return scaled.astype(target)


_FLOAT32 = np.dtype(np.float32)
_LIMITS: dict[np.dtype[Any], tuple[np.float32, np.float32]] = {}


def _limits(dtype: np.dtype[Any]) -> tuple[np.float32, np.float32]:
    """An integer dtype's range as float32 scalars (computed once per dtype)."""
    limits = _LIMITS.get(dtype)
    if limits is None:
        info = np.iinfo(dtype)
        limits = _LIMITS[dtype] = (np.float32(info.min), np.float32(info.max))
    return limits


def dequantize(raw: np.ndarray, scale: float, zero: int) -> np.ndarray:
    """A quantized output as float32 (``scale`` 0: not quantized, returned as it is)."""
    if scale == 0.0:
        return raw
    return (raw.astype(np.float32) - np.float32(zero)) * np.float32(scale)


def tensor_quantization(details: dict[str, Any]) -> tuple[float, int]:
    """(scale, zero_point) of an integer tensor with per-tensor quantization, else (0.0, 0)."""
    scale, zero_point = details.get("quantization", (0.0, 0))
    if np.dtype(details["dtype"]).kind not in "iu" or not scale:
        return 0.0, 0
    return float(scale), int(zero_point)

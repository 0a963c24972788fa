"""Model runtimes: LiteRT (.tflite) and ONNX Runtime (.onnx), behind one small interface.

Both classes offer what the HTTP layer and the batcher need: ``input_shape``, ``output_shape``
(per sample, -1 for a dynamic dimension), ``input_dtype``, ``input_quantized``, ``output_dtype``,
``platform``, ``predict(batch)`` (thread-safe) and ``warm_up(batch_sizes)``.
``serving.loading.load_runtime`` picks one from the config (``runtime``, or the artifact's
suffix). modelprep measures every variant through these same classes (``from_bytes``), so the gate judges the outputs the server gives.

``LiteRTModel`` hides the TFLite tensor plumbing: it quantizes float inputs for int8/uint8
models, dequantizes quantized outputs, and keeps one interpreter per batch-size bucket (powers of
two up to ``max_bucket``) so that batches of varying size never pay for
``resize_tensor_input`` + ``allocate_tensors`` (which reallocates every tensor): a batch of n
runs on the interpreter of the smallest bucket >= n, padded with zero rows that are dropped from
the output. Each interpreter has its own lock (an interpreter is not re-entrant). The model must
have exactly one input and one output tensor.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

# Batches above the largest bucket are split into chunks of that size.
DEFAULT_MAX_BUCKET = 64


class Runtime(Protocol):
    """What the server needs from a loaded model."""

    platform: str

    @property
    def input_shape(self) -> tuple[int, ...]: ...
    @property
    def output_shape(self) -> tuple[int, ...]: ...
    @property
    def input_dtype(self) -> np.dtype[Any]: ...
    @property
    def input_quantized(self) -> bool: ...
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


class _Slot:
    """One interpreter allocated for a fixed batch size, with its lock."""

    __slots__ = ("interpreter", "lock", "size")

    def __init__(self, interpreter: Any, size: int) -> None:
        self.interpreter = interpreter
        self.lock = threading.Lock()
        self.size = size


class LiteRTModel:
    """A .tflite model ready to run batches; ``predict`` may be called from any thread."""

    platform = "tensorflow_lite"
    labels: tuple[str, ...] = ()  # no class names (a text classifier has them); read per request

    def __init__(
        self,
        path: str | os.PathLike[str],
        num_threads: int = 1,
        max_bucket: int = DEFAULT_MAX_BUCKET,
        content: bytes | None = None,
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
        inputs = interpreter.get_input_details()
        outputs = interpreter.get_output_details()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"model artifact {model_path}: expected exactly one input and one output tensor, "
                f"found {len(inputs)} inputs and {len(outputs)} outputs"
            )
        self._input = inputs[0]
        self._output = outputs[0]
        self._input_index: int = self._input["index"]
        self._output_index: int = self._output["index"]
        self._input_dtype: np.dtype[Any] = np.dtype(self._input["dtype"])
        self._in_scale, self._in_zero = tensor_quantization(self._input)
        self._out_scale, self._out_zero = tensor_quantization(self._output)
        signature = self._input.get("shape_signature", self._input["shape"])
        self._dynamic_batch = len(signature) > 0 and int(signature[0]) == -1
        self._sample_shape = tuple(max(int(d), 1) for d in self._input["shape"][1:])
        self.max_bucket = bucket_for(max_bucket) if self._dynamic_batch else 1
        self._slots: dict[int, _Slot] = {}
        self._slots_lock = threading.Lock()
        interpreter.allocate_tensors()
        first = int(self._input["shape"][0]) if len(self._input["shape"]) else 1
        self._slots[first] = _Slot(interpreter, first)

    @classmethod
    def from_bytes(cls, content: bytes, num_threads: int = 1, max_bucket: int = DEFAULT_MAX_BUCKET) -> LiteRTModel:
        """The same model from the artifact's bytes (what modelprep measures before anything is written)."""
        return cls("<memory>.tflite", num_threads=num_threads, max_bucket=max_bucket, content=content)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample input shape (no batch dimension); -1 marks a dynamic dimension."""
        signature = self._input.get("shape_signature", self._input["shape"])
        return tuple(int(d) for d in signature[1:])

    @property
    def output_shape(self) -> tuple[int, ...]:
        """Per-sample output shape (no batch dimension); -1 marks a dynamic dimension."""
        signature = self._output.get("shape_signature", self._output["shape"])
        return tuple(int(d) for d in signature[1:])

    @property
    def input_dtype(self) -> np.dtype[Any]:
        """The input tensor's dtype (int8/uint8 for a fully quantized model)."""
        return self._input_dtype

    @property
    def input_quantized(self) -> bool:
        """True when float inputs are quantized with the tensor's scale and zero point."""
        return self._in_scale != 0.0

    @property
    def output_dtype(self) -> np.dtype[Any]:
        """The dtype ``predict`` returns: float32 for quantized outputs, else the tensor's."""
        dtype: np.dtype[Any] = np.dtype(np.float32 if self._out_scale else self._output["dtype"])
        return dtype

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Run a batch (first axis = samples) and return the output batch.

        Float input for a quantized input tensor is quantized; input already in the tensor's
        dtype is passed through as is.
        """
        batch = np.asarray(batch)
        if batch.ndim == 0 or batch.shape[0] == 0:
            raise ValueError(f"predict needs a batch with at least one sample, got shape {batch.shape}")
        tensor = self._to_input_tensor(batch)
        n = tensor.shape[0]
        step = self.max_bucket
        if n <= step:
            raw = self._run(tensor)
        else:
            raw = np.concatenate([self._run(tensor[i : i + step]) for i in range(0, n, step)])
        return self._from_output_tensor(raw)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> np.ndarray:
        """Run zero-filled batches so requests do not pay for lazy initialization.

        Each size allocates (and runs once) the interpreter of its bucket.
        """
        result = np.zeros(0)
        for size in batch_sizes:
            result = self.predict(np.zeros((size, *self._sample_shape), dtype=np.float32))
        return result

    def _run(self, tensor: np.ndarray) -> np.ndarray:
        n = tensor.shape[0]
        if not self._dynamic_batch:
            # A model exported with a fixed batch of 1 cannot be resized: run samples one by one.
            slot = self._slots[next(iter(self._slots))]
            if n == 1:
                return self._invoke(slot, tensor)
            return np.concatenate([self._invoke(slot, tensor[i : i + 1]) for i in range(n)])
        size = n if n & (n - 1) == 0 else bucket_for(n)  # a power of two is its own bucket
        slot = self._slots.get(size) or self._new_slot(size)
        if size != n:
            padded = np.zeros((size, *tensor.shape[1:]), dtype=tensor.dtype)
            padded[:n] = tensor
            return self._invoke(slot, padded)[:n]
        return self._invoke(slot, tensor)

    def _new_slot(self, size: int) -> _Slot:
        with self._slots_lock:
            slot = self._slots.get(size)
            if slot is None:
                interpreter = self._make()
                interpreter.resize_tensor_input(self._input_index, [size, *self._sample_shape])
                interpreter.allocate_tensors()
                slot = self._slots[size] = _Slot(interpreter, size)
            return slot

    def _invoke(self, slot: _Slot, tensor: np.ndarray) -> np.ndarray:
        with slot.lock:
            interpreter = slot.interpreter
            interpreter.set_tensor(self._input_index, tensor)
            interpreter.invoke()
            output: np.ndarray = interpreter.get_tensor(self._output_index)
            return output  # a copy, so it stays valid after the lock is released

    def _to_input_tensor(self, batch: np.ndarray) -> np.ndarray:
        if self._in_scale != 0.0 and batch.dtype.kind == "f":
            return quantize(batch, self._input_dtype, self._in_scale, self._in_zero)
        return np.ascontiguousarray(batch, dtype=self._input_dtype)

    def _from_output_tensor(self, raw: np.ndarray) -> np.ndarray:
        return dequantize(raw, self._out_scale, self._out_zero)


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

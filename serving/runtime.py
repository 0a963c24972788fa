"""LiteRT runtime: one interpreter, safe to share between request threads.

``LiteRTModel`` hides the TFLite tensor plumbing from the HTTP layer: it resizes the input to
the batch it is given, quantizes float inputs for int8/uint8 models, dequantizes quantized
outputs, and serializes invocations with one lock (an interpreter is not re-entrant).
The model must have exactly one input and one output tensor.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np


class LiteRTModel:
    """A .tflite model ready to run batches; ``predict`` may be called from any thread."""

    def __init__(self, path: str | os.PathLike[str], num_threads: int = 1) -> None:
        # Imported here so importing this module (e.g. for config checks) stays cheap.
        from ai_edge_litert.interpreter import Interpreter

        model_path = Path(path)
        if not model_path.is_file():
            raise FileNotFoundError(f"model artifact {model_path} does not exist")
        self.path = model_path
        self.num_threads = num_threads
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        inputs = self._interpreter.get_input_details()
        outputs = self._interpreter.get_output_details()
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
        self._in_scale, self._in_zero = _quantization(self._input)
        self._out_scale, self._out_zero = _quantization(self._output)
        signature = self._input.get("shape_signature", self._input["shape"])
        self._dynamic_batch = len(signature) > 0 and int(signature[0]) == -1
        self._lock = threading.Lock()
        self._interpreter.allocate_tensors()
        self._current_shape = tuple(int(d) for d in self._input["shape"])

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
        if self._dynamic_batch or tensor.shape[0] == 1:
            raw = self._invoke(tensor)
        else:
            # A model exported with a fixed batch of 1 cannot be resized: run samples one by one.
            raw = np.concatenate([self._invoke(tensor[i : i + 1]) for i in range(tensor.shape[0])])
        return self._from_output_tensor(raw)

    def warm_up(self) -> np.ndarray:
        """Run one zero-filled sample so the first request does not pay for lazy initialization."""
        shape = tuple(max(d, 1) for d in self.input_shape)
        return self.predict(np.zeros((1, *shape), dtype=np.float32))

    def _invoke(self, tensor: np.ndarray) -> np.ndarray:
        with self._lock:
            if tensor.shape != self._current_shape:
                # Resizing reallocates every tensor, so it happens only when the shape changes.
                self._interpreter.resize_tensor_input(self._input_index, list(tensor.shape))
                self._interpreter.allocate_tensors()
                self._current_shape = tensor.shape
            self._interpreter.set_tensor(self._input_index, tensor)
            self._interpreter.invoke()
            output: np.ndarray = self._interpreter.get_tensor(self._output_index)
            return output  # a copy, so it stays valid after the lock is released

    def _to_input_tensor(self, batch: np.ndarray) -> np.ndarray:
        target = self._input_dtype
        tensor: np.ndarray
        if self.input_quantized and batch.dtype.kind == "f":
            info = np.iinfo(target)
            scaled = np.round(batch.astype(np.float32) / self._in_scale) + self._in_zero
            tensor = np.clip(scaled, info.min, info.max).astype(target)
        else:
            tensor = np.ascontiguousarray(batch, dtype=target)
        return tensor

    def _from_output_tensor(self, raw: np.ndarray) -> np.ndarray:
        if self._out_scale == 0.0:
            return raw
        return (raw.astype(np.float32) - np.float32(self._out_zero)) * np.float32(self._out_scale)


def _quantization(details: dict[str, Any]) -> tuple[float, int]:
    """(scale, zero_point) of an integer tensor with per-tensor quantization, else (0.0, 0)."""
    scale, zero_point = details.get("quantization", (0.0, 0))
    if np.dtype(details["dtype"]).kind not in "iu" or not scale:
        return 0.0, 0
    return float(scale), int(zero_point)

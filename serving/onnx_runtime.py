"""ONNX Runtime backend: the same interface as ``serving.runtime.LiteRTModel``.

Used when the artifact ends in ``.onnx`` (or the config says ``"runtime": "onnx"``). Needs the
``onnxruntime`` package, which the serving image installs only for ONNX artifacts (see
docs/serving.md). ``InferenceSession.run`` is thread-safe, so no lock is taken; intra-op threads
come from the config's ``threads``, inter-op parallelism is off (one sequential graph).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

# ONNX tensor element types by onnxruntime's type string.
ORT_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}


class OnnxModel:
    """An .onnx model with one input and one output; ``predict`` may be called from any thread."""

    platform = "onnxruntime_onnx"

    def __init__(self, path: str | os.PathLike[str], num_threads: int = 1, content: bytes | None = None) -> None:
        import onnxruntime as ort

        model_path = Path(path)
        if content is None and not model_path.is_file():
            raise FileNotFoundError(f"model artifact {model_path} does not exist")
        self.path = model_path
        self.num_threads = num_threads
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(model_path) if content is None else content, sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = self._session.get_inputs()
        outputs = self._session.get_outputs()
        if len(inputs) != 1 or len(outputs) != 1:
            raise ValueError(
                f"model artifact {model_path}: expected exactly one input and one output tensor, "
                f"found {len(inputs)} inputs and {len(outputs)} outputs"
            )
        self._input, self._output = inputs[0], outputs[0]
        for tensor in (self._input, self._output):
            if tensor.type not in ORT_DTYPES:
                raise ValueError(f"model artifact {model_path}: unsupported tensor type {tensor.type}")
        self._input_name: str = self._input.name
        self._input_dtype: np.dtype[Any] = np.dtype(ORT_DTYPES[self._input.type])
        self._output_dtype: np.dtype[Any] = np.dtype(ORT_DTYPES[self._output.type])

    @classmethod
    def from_bytes(cls, content: bytes, num_threads: int = 1) -> OnnxModel:
        """The same model from the artifact's bytes (what modelprep measures before anything is written)."""
        return cls("<memory>.onnx", num_threads=num_threads, content=content)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(onnx_dim(d) for d in self._input.shape[1:])

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(onnx_dim(d) for d in self._output.shape[1:])

    @property
    def input_dtype(self) -> np.dtype[Any]:
        return self._input_dtype

    @property
    def input_quantized(self) -> bool:
        return False  # quantized ONNX graphs take float input and quantize inside the graph

    @property
    def output_dtype(self) -> np.dtype[Any]:
        return self._output_dtype

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim == 0 or batch.shape[0] == 0:
            raise ValueError(f"predict needs a batch with at least one sample, got shape {batch.shape}")
        tensor = np.ascontiguousarray(batch, dtype=self._input_dtype)
        output: np.ndarray = self._session.run(None, {self._input_name: tensor})[0]
        return output

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> np.ndarray:
        sample = tuple(max(d, 1) for d in self.input_shape)
        result = np.zeros(0)
        for size in batch_sizes:
            result = self.predict(np.zeros((size, *sample), dtype=np.float32))
        return result


def onnx_dim(value: Any) -> int:
    """A symbolic or unknown ONNX dimension is dynamic (-1)."""
    return value if isinstance(value, int) and value > 0 else -1

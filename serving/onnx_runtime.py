"""ONNX Runtime backend: the same interface as ``serving.runtime.LiteRTModel``, one input or several.

Used when the artifact ends in ``.onnx`` (or the config says ``"runtime": "onnx"``). Needs the
``onnxruntime`` package, which the serving image installs only for ONNX artifacts (see
docs/serving.md). ``InferenceSession.run`` is thread-safe, so no lock is taken; intra-op threads
come from the config's ``threads``, inter-op parallelism is off (one sequential graph).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.feeds import unpack, zeros
from serving.runtime import Feed, request_names

if TYPE_CHECKING:
    from serving.config import InputSpec

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
    """An .onnx model with one output; ``predict`` may be called from any thread.

    ``inputs`` (the config's) names the graph's inputs as requests do
    (``serving.runtime.request_names``); without it they keep the graph's own names."""

    platform = "onnxruntime_onnx"

    def __init__(
        self,
        path: str | os.PathLike[str],
        num_threads: int = 1,
        content: bytes | None = None,
        inputs: Sequence[InputSpec] | None = None,
    ) -> None:
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
        graph_inputs = {tensor.name: tensor for tensor in self._session.get_inputs()}
        outputs = self._session.get_outputs()
        if len(outputs) != 1:
            raise ValueError(f"model artifact {model_path}: expected one output tensor, found {len(outputs)}")
        self._output = outputs[0]
        for tensor in (*graph_inputs.values(), self._output):
            if tensor.type not in ORT_DTYPES:
                raise ValueError(f"model artifact {model_path}: unsupported tensor type {tensor.type}")
        # (graph input name, the name requests give it) of each input, in the config's order.
        self._names = request_names(list(graph_inputs), inputs, model_path)
        self._feeds = tuple(
            Feed(
                name,
                tuple(onnx_dim(d) for d in graph_inputs[own].shape[1:]),
                np.dtype(ORT_DTYPES[graph_inputs[own].type]),
            )
            for own, name in self._names
        )
        self._wanted = tuple(name for _, name in self._names)
        self._output_dtype: np.dtype[Any] = np.dtype(ORT_DTYPES[self._output.type])

    @classmethod
    def from_bytes(cls, content: bytes, num_threads: int = 1, inputs: Sequence[InputSpec] | None = None) -> OnnxModel:
        """The same model from the artifact's bytes (what modelprep measures before anything is written)."""
        return cls("<memory>.onnx", num_threads=num_threads, content=content, inputs=inputs)

    @property
    def feeds(self) -> tuple[Feed, ...]:
        """Each input, under the name requests give it, in the config's order. Never quantized:
        quantized ONNX graphs take float input and quantize inside the graph."""
        return self._feeds

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(onnx_dim(d) for d in self._output.shape[1:])

    @property
    def output_dtype(self) -> np.dtype[Any]:
        return self._output_dtype

    def predict(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch)
        if batch.ndim == 0 or batch.shape[0] == 0:
            raise ValueError(f"predict needs a batch with at least one sample, got shape {batch.shape}")
        values = unpack(batch, self._wanted)
        feed = {
            own: np.ascontiguousarray(values[name], dtype=spec.dtype)
            for (own, name), spec in zip(self._names, self._feeds)
        }
        output: np.ndarray = self._session.run(None, feed)[0]
        return output

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> np.ndarray:
        result = np.zeros(0)
        for size in batch_sizes:
            result = self.predict(zeros(self._feeds, size))
        return result


def onnx_dim(value: Any) -> int:
    """A symbolic or unknown ONNX dimension is dynamic (-1)."""
    return value if isinstance(value, int) and value > 0 else -1

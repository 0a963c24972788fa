"""Runtimes for models with several named inputs: LiteRT (by signature name) and ONNX Runtime.

``predict`` takes a batch made by ``serving.feeds.pack`` (a structured array, one field per
input) and returns the one output tensor, like the single-input runtimes; ``feeds`` maps each
input's name to its per-sample shape (-1: dynamic) and dtype, which start-up checks against the
config. LiteRT keeps one interpreter per power-of-two batch bucket, as ``LiteRTModel`` does.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.feeds import unpack, zeros
from serving.runtime import (
    DEFAULT_MAX_BUCKET,
    artifact_bytes,
    bucket_for,
    dequantize,
    tensor_quantization,
)

if TYPE_CHECKING:
    from serving.config import InputSpec, ServingConfig


def load_multi_runtime(config: ServingConfig) -> Any:
    """The runtime for a config with several inputs."""
    if config.resolved_runtime == "onnx":
        return OnnxFeedsModel(config.artifact, config.inputs, num_threads=config.threads)
    return LiteRTFeedsModel(
        config.artifact,
        config.inputs,
        num_threads=config.threads,
        max_bucket=max(DEFAULT_MAX_BUCKET, config.max_batch_size),
    )


def check_feeds(feeds: dict[str, tuple[tuple[int, ...], np.dtype[Any]]], inputs: list[InputSpec], where: str) -> None:
    """Every configured input must be one of the model's, with a fitting shape and dtype."""
    if sorted(feeds) != sorted(spec.name for spec in inputs):
        raise ValueError(
            f"{where}: the model's inputs are {sorted(feeds)}, the config lists {[spec.name for spec in inputs]}"
        )
    for i, spec in enumerate(inputs):
        shape, dtype = feeds[spec.name]
        if len(shape) != len(spec.shape) or any(m not in (-1, c) for m, c in zip(shape, spec.shape)):
            raise ValueError(
                f"inputs[{i}].shape {list(spec.shape)} does not match the model's input "
                f"{spec.name!r} of shape {list(shape)} (batch dimension excluded)"
            )
        client = np.dtype(spec.dtype)
        if not (
            dtype == client
            or (dtype.kind == "f" and client.kind == "f")
            or (dtype.kind in "iu" and client.kind in "iu")
        ):
            raise ValueError(f"inputs[{i}].dtype {spec.dtype} cannot feed the model's {dtype.name} input {spec.name!r}")


class LiteRTFeedsModel:
    """A .tflite model with several inputs, fed by name through its signature."""

    platform = "tensorflow_lite"

    def __init__(
        self,
        path: str | os.PathLike[str],
        inputs: list[InputSpec],
        num_threads: int = 1,
        max_bucket: int = DEFAULT_MAX_BUCKET,
        content: bytes | None = None,
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        model_path = Path(path)
        content = artifact_bytes(model_path, content)
        self.path = model_path
        self._inputs = list(inputs)
        self._make = lambda: Interpreter(model_content=content, num_threads=num_threads)
        interpreter = self._make()
        signatures = interpreter.get_signature_list()
        if len(signatures) == 1:
            runner = interpreter.get_signature_runner(next(iter(signatures)))
            details = dict(runner.get_input_details())
            outputs = list(runner.get_output_details().values())
        else:  # no signature: the tensors' own names ("serving_default_user_id:0" or "user_id")
            details = {_plain(d["name"]): d for d in interpreter.get_input_details()}
            outputs = interpreter.get_output_details()
        if len(outputs) != 1:
            raise ValueError(f"model artifact {model_path}: expected one output tensor, found {len(outputs)}")
        self._details = details
        self._output = outputs[0]
        self._out_scale, self._out_zero = tensor_quantization(self._output)
        self._index = {name: int(d["index"]) for name, d in details.items()}
        self._dtype = {name: np.dtype(d["dtype"]) for name, d in details.items()}
        self.feeds = {
            name: (tuple(int(x) for x in d.get("shape_signature", d["shape"])[1:]), np.dtype(d["dtype"]))
            for name, d in details.items()
        }
        self._sample = {name: tuple(max(int(x), 1) for x in d["shape"][1:]) for name, d in details.items()}
        self.max_bucket = bucket_for(max_bucket)
        self._slots: dict[int, tuple[Any, threading.Lock]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_bytes(cls, content: bytes, inputs: list[InputSpec], num_threads: int = 1) -> LiteRTFeedsModel:
        return cls("<memory>.tflite", inputs, num_threads=num_threads, content=content)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self._output.get("shape_signature", self._output["shape"])[1:])

    @property
    def output_dtype(self) -> np.dtype[Any]:
        return np.dtype(np.float32 if self._out_scale else self._output["dtype"])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        tensors = unpack(batch)
        n = len(batch)
        if n == 0:
            raise ValueError("predict needs a batch with at least one sample")
        step = self.max_bucket
        if n <= step:
            raw = self._run(tensors, n)
        else:
            raw = np.concatenate(
                [
                    self._run({k: v[i : i + step] for k, v in tensors.items()}, min(step, n - i))
                    for i in range(0, n, step)
                ]
            )
        return dequantize(raw, self._out_scale, self._out_zero)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> np.ndarray:
        result = np.zeros(0)
        for size in batch_sizes:
            result = self.predict(zeros(self._inputs, size))
        return result

    def _slot(self, size: int) -> tuple[Any, threading.Lock]:
        slot = self._slots.get(size)
        if slot is None:
            with self._lock:
                slot = self._slots.get(size)
                if slot is None:
                    interpreter = self._make()
                    for name, index in self._index.items():
                        interpreter.resize_tensor_input(index, [size, *self._sample[name]])
                    interpreter.allocate_tensors()
                    slot = self._slots[size] = (interpreter, threading.Lock())
        return slot

    def _run(self, tensors: dict[str, np.ndarray], n: int) -> np.ndarray:
        size = bucket_for(n)
        interpreter, lock = self._slot(size)
        with lock:
            for name, index in self._index.items():
                tensor = np.ascontiguousarray(tensors[name], dtype=self._dtype[name])
                if size != n:
                    padded = np.zeros((size, *tensor.shape[1:]), dtype=tensor.dtype)
                    padded[:n] = tensor
                    tensor = padded
                interpreter.set_tensor(index, tensor)
            interpreter.invoke()
            output: np.ndarray = interpreter.get_tensor(self._output["index"])
        return output[:n]


class OnnxFeedsModel:
    """An .onnx model with several inputs, fed by name; ``InferenceSession.run`` is thread-safe."""

    platform = "onnxruntime_onnx"

    def __init__(
        self, path: str | os.PathLike[str], inputs: list[InputSpec], num_threads: int = 1, content: bytes | None = None
    ) -> None:
        import onnxruntime as ort

        from serving.onnx_runtime import ORT_DTYPES, onnx_dim

        model_path = Path(path)
        if content is None and not model_path.is_file():
            raise FileNotFoundError(f"model artifact {model_path} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(
            str(model_path) if content is None else content, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._inputs = list(inputs)
        outputs = self._session.get_outputs()
        if len(outputs) != 1:
            raise ValueError(f"model artifact {model_path}: expected one output tensor, found {len(outputs)}")
        self._output = outputs[0]
        self.feeds = {
            t.name: (tuple(onnx_dim(d) for d in t.shape[1:]), np.dtype(ORT_DTYPES[t.type]))
            for t in self._session.get_inputs()
        }
        self._output_dtype = np.dtype(ORT_DTYPES[self._output.type])
        self._output_shape = tuple(onnx_dim(d) for d in self._output.shape[1:])

    @classmethod
    def from_bytes(cls, content: bytes, inputs: list[InputSpec], num_threads: int = 1) -> OnnxFeedsModel:
        return cls("<memory>.onnx", inputs, num_threads=num_threads, content=content)

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self._output_shape

    @property
    def output_dtype(self) -> np.dtype[Any]:
        return self._output_dtype

    def predict(self, batch: np.ndarray) -> np.ndarray:
        tensors = unpack(batch)
        feed = {name: tensors[name].astype(dtype, copy=False) for name, (_, dtype) in self.feeds.items()}
        output: np.ndarray = self._session.run(None, feed)[0]
        return output

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> np.ndarray:
        result = np.zeros(0)
        for size in batch_sizes:
            result = self.predict(zeros(self._inputs, size))
        return result


def _plain(name: str) -> str:
    """A LiteRT tensor name without the converter's signature prefix and output suffix."""
    name = name.split(":")[0]
    return name[len("serving_default_") :] if name.startswith("serving_default_") else name

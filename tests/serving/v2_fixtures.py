"""Helpers for the Open Inference Protocol tests: a tiny ONNX model and a server subprocess with gRPC on.

The model is built with ``onnx.helper`` (no TensorFlow, so these tests run in seconds): input
``features`` of shape [-1, 4] float32, output softmax(x @ W + b) of shape [-1, 3], computed
again here in numpy for the expected answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from serving_support import ServerProcess

from serving.runtime import Feed

MODEL = "tiny"
WEIGHTS = np.array([[0.5, -0.25, 0.1], [0.3, 0.2, -0.4], [-0.6, 0.1, 0.25], [0.05, 0.45, -0.15]], dtype=np.float32)
BIAS = np.array([0.1, -0.2, 0.05], dtype=np.float32)
SAMPLES = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
API_KEY = "v2-test-key"


def expected_outputs(batch: np.ndarray) -> np.ndarray:
    logits = batch.astype(np.float32) @ WEIGHTS + BIAS
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def tiny_onnx_model(folder: Path) -> Path:
    """The 4 -> 3 softmax model as an .onnx file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", 3])],
        initializer=[numpy_helper.from_array(WEIGHTS, "W"), numpy_helper.from_array(BIAS, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every onnxruntime the project allows
    path = folder / "tiny.onnx"
    onnx.save(model, str(path))
    return path


def server_config(artifact: Path, **overrides: Any) -> dict[str, Any]:
    """HTTP and gRPC on ephemeral ports (the "listening" line tells which)."""
    return {
        "model_name": MODEL,
        "artifact": str(artifact),
        "host": "127.0.0.1",
        "port": 0,
        "grpc_port": 0,
        "threads": 1,
        "inputs": [{"name": "features", "shape": [4], "dtype": "float32"}],
        "max_body_bytes": 65536,
        **overrides,
    }


class V2Server(ServerProcess):
    """The server process, argument order as the V2 tests call it (``argv`` runs instead of a config)."""

    def __init__(
        self,
        config: dict[str, Any] | None,
        folder: Path | None,
        env: dict[str, str] | None = None,
        argv: list[str] | None = None,
        preexec_fn: Any = None,
    ) -> None:
        super().__init__(config, folder, command=argv, env=env, preexec_fn=preexec_fn)


def started(config: dict[str, Any], folder: Path, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    """Body of a module-scoped fixture: a ready server, stopped afterwards."""
    server = V2Server(config, folder, env)
    try:
        server.wait_for("ready")
        yield server
    finally:
        server.stop()


class FakeTextModel:
    """A stand-in text runtime: each text's length in characters and 1, as float32 (no tokenizer, no ONNX)."""

    platform = "fake_text"
    feeds = (Feed("text", (), np.dtype(object)),)
    output_shape = (2,)
    output_dtype = np.dtype(np.float32)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.array([[len(text), 1.0] for text in batch.reshape(-1)], dtype=np.float32)


@contextlib.contextmanager
def grpc_in_process(config: dict[str, Any], model: Any, sample_cost_s: float | None = None) -> Iterator[str]:
    """The gRPC front end on its own event loop in a thread, serving ``model``; yields host:port."""
    from serving.batched import BatchedModel
    from serving.config import ServingConfig
    from serving.grpc_service import GrpcFrontEnd
    from serving.state import ModelState

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    state = ModelState(ServingConfig.from_dict(config))

    async def start() -> GrpcFrontEnd:
        # a cost >= 0.2 ms: inference on a thread
        state.set_ready(BatchedModel(model, state.config, sample_cost_s=sample_cost_s), loop)
        front = GrpcFrontEnd(state, "127.0.0.1", 0)
        await front.start()
        return front

    front = asyncio.run_coroutine_threadsafe(start(), loop).result(timeout=10)
    try:
        yield f"127.0.0.1:{front.port}"
    finally:
        asyncio.run_coroutine_threadsafe(front.stop(1.0), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        state.close()


class SlowModel:
    """The tiny model's shape, answering after ``seconds`` (on the batcher's inference thread)."""

    platform = "slow"
    feeds = (Feed("features", (4,), np.dtype(np.float32)),)
    output_shape = (3,)
    output_dtype = np.dtype(np.float32)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return expected_outputs(batch)

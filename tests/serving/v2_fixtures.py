"""Helpers for the Open Inference Protocol tests: a tiny ONNX model and a server subprocess with gRPC on.

The model is built with ``onnx.helper`` (no TensorFlow, so these tests run in seconds): input
``features`` of shape [-1, 4] float32, output softmax(x @ W + b) of shape [-1, 3], computed
again here in numpy for the expected answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[2]
MODEL = "tiny"
WEIGHTS = np.array(
    [[0.5, -0.25, 0.1], [0.3, 0.2, -0.4], [-0.6, 0.1, 0.25], [0.05, 0.45, -0.15]], dtype=np.float32
)
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
        "model_name": MODEL, "artifact": str(artifact), "host": "127.0.0.1", "port": 0,
        "grpc_port": 0, "threads": 1, "inputs": [{"name": "features", "shape": [4], "dtype": "float32"}],
        "max_body_bytes": 65536, **overrides,
    }


class V2Server:
    """``python -m serving.server`` with its log read line by line; ports come from "listening"."""

    def __init__(
        self, config: dict[str, Any] | None, folder: Path | None, env: dict[str, str] | None = None,
        argv: list[str] | None = None,
    ) -> None:
        """Serve ``config`` (written to ``folder``), or run ``argv`` instead when it is given."""
        env = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO)}
        if argv is None:
            assert config is not None and folder is not None
            path = folder / "serving.json"
            path.write_text(json.dumps(config))
            env["MODELSTACK_SERVING_CONFIG"] = str(path)
        self.proc = subprocess.Popen(
            argv or [sys.executable, "-m", "serving.server"], cwd=REPO, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.lines: list[str] = []
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        self.port = 0
        self.grpc_port = 0

    def _collect(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("{"):
                self._events.put(json.loads(line))

    def wait_for(self, event: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                record = self._events.get(timeout=0.1)
            except queue.Empty:
                if self.proc.poll() is not None and not self._reader.is_alive():
                    break
                continue
            if record.get("event") == "listening":
                self.port = record["port"]
                self.grpc_port = record.get("grpc_port") or 0
            if record.get("event") == event:
                return record
        raise AssertionError(f"no {event!r} event; server log:\n{''.join(self.lines)}")

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines if line.startswith("{")]

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


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
    input_shape: tuple[int, ...] = ()
    output_shape = (2,)
    output_dtype = np.dtype(np.float32)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.array([[len(text), 1.0] for text in batch.reshape(-1)], dtype=np.float32)


@contextlib.contextmanager
def grpc_in_process(config: dict[str, Any], model: Any, sample_cost_s: float | None = None) -> Iterator[str]:
    """The gRPC front end on its own event loop in a thread, serving ``model``; yields host:port."""
    from serving.config import ServingConfig
    from serving.grpc_service import GrpcFrontEnd
    from serving.state import ModelState

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    state = ModelState(ServingConfig.from_dict(config))

    async def start() -> GrpcFrontEnd:
        state.set_ready(model, loop, sample_cost_s)  # a cost >= 0.2 ms: inference on a thread
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
    input_shape = (4,)
    output_shape = (3,)
    output_dtype = np.dtype(np.float32)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def predict(self, batch: np.ndarray) -> np.ndarray:
        time.sleep(self.seconds)
        return expected_outputs(batch)

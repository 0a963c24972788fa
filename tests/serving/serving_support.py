"""Helpers for the serving tests: a server subprocess, configs, a numpy-only fake runtime, HTTP reading."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from serving.runtime import Feed

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
MODEL = "tiny"
METADATA = {"variant": "float32", "artifact_sha256": "ab" * 32, "accuracy": 0.97, "nested": {"k": [1, 2]}}
SAMPLES = np.random.default_rng(7).normal(size=(5, 4)).astype(np.float32)
# Runs the real server with FakeRuntime in place of LiteRT (see fake_server.py).
FAKE_SERVER = [sys.executable, str(HERE / "fake_server.py")]


class FakeRuntime:
    """A 4 -> 3 softmax layer in numpy with the Runtime interface: no model file, no TensorFlow."""

    platform = "fake"
    feeds = (Feed("features", (4,), np.dtype(np.float32)),)
    output_shape = (3,)
    output_dtype = np.dtype(np.float32)
    weights = np.arange(12, dtype=np.float32).reshape(4, 3) / 10 - 0.5
    bias = np.array([0.1, -0.2, 0.05], dtype=np.float32)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        logits = batch.astype(np.float32) @ self.weights + self.bias
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> np.ndarray:
        out = np.zeros((1, 3), np.float32)
        for size in batch_sizes:
            out = self.predict(np.zeros((size, 4), np.float32))
        return out


class FakeRecommender:
    """Two integer id inputs -> one score, in numpy: a dot product of fixed embeddings."""

    platform = "fake"
    output_shape = (1,)
    output_dtype = np.dtype(np.float32)
    feeds = (Feed("user_id", (1,), np.dtype(np.int32)), Feed("item_id", (1,), np.dtype(np.int32)))
    users = np.random.default_rng(1).normal(size=(50, 4)).astype(np.float32)
    items = np.random.default_rng(2).normal(size=(80, 4)).astype(np.float32)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        users = self.users[np.asarray(batch["user_id"])[:, 0] % 50]
        items = self.items[np.asarray(batch["item_id"])[:, 0] % 80]
        return (users * items).sum(axis=1, keepdims=True).astype(np.float32)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> np.ndarray:
        from serving.feeds import zeros

        out = np.zeros((1, 1), np.float32)
        for size in batch_sizes:
            out = self.predict(zeros(RECOMMENDER_INPUTS, size))
        return out


class FakeTextRuntime:
    """A text model in numpy: each text's length in characters and 1 (no tokenizer, no ONNX)."""

    platform = "fake_text"
    feeds = (Feed("text", (), np.dtype(object)),)
    output_shape = (2,)
    output_dtype = np.dtype(np.float32)
    labels: tuple[str, ...] = ()

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return np.array([[len(text), 1.0] for text in batch.reshape(-1)], dtype=np.float32)

    def warm_up(self, batch_sizes: tuple[int, ...] = (1,)) -> np.ndarray:
        return self.predict(np.array(["warm"] * max(batch_sizes), dtype=object))


def _recommender_inputs() -> list[Any]:
    from serving.config import InputSpec

    return [InputSpec("user_id", (1,), "int32"), InputSpec("item_id", (1,), "int32")]


RECOMMENDER_INPUTS = _recommender_inputs()


def server_env() -> dict[str, str]:
    """This environment with this checkout's packages first on PYTHONPATH (what the caller's adds, e.g.
    a freshly built transport, after them): fake_server.py's own folder comes first on its path, so
    without it ``serving`` is whichever checkout the editable install points at (another worktree's)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    return {**os.environ, "PYTHONPATH": path}


class ServerProcess:
    """``python -m serving.server`` (or ``command``) on 127.0.0.1 with its stderr collected line by line."""

    def __init__(
        self,
        config: dict[str, Any] | None,
        folder: Path | None,
        command: list[str] | None = None,
        env: dict[str, str] | None = None,
        preexec_fn: Any = None,
    ) -> None:
        """Serve ``config`` (written to ``folder``); with ``config=None``, ``command`` brings its own."""
        full_env = {**server_env(), **(env or {})}
        if config is not None:
            assert folder is not None
            config_path = folder / "serving.json"
            config_path.write_text(json.dumps(config))
            full_env["MODELSTACK_SERVING_CONFIG"] = str(config_path)
        self.proc = subprocess.Popen(
            command or [sys.executable, "-m", "serving.server"],
            cwd=REPO,
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec_fn,
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
                    break  # exited and every line has been read
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

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, http.client.HTTPResponse, Any]:
        """One request on a fresh connection; JSON bodies are encoded and decoded."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            conn.request(method, path, body=data, headers=headers or {})
            response = conn.getresponse()
            payload = response.read()
            return response.status, response, json.loads(payload) if payload else None
        finally:
            conn.close()

    def raw(self, data: bytes) -> tuple[int, dict[str, str], Any]:
        """Send raw bytes and parse the one response (for requests http.client will not send)."""
        return raw_request(self.port, data)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)


@contextlib.contextmanager
def in_process_server(tmp_path: Path, ready: bool = False, **overrides: Any) -> Iterator[int]:
    """A server in this process (its loop in a thread), on FakeRuntime when ``ready``, else never
    loaded; yields its port."""
    from serving.app import App
    from serving.batched import BatchedModel
    from serving.config import ServingConfig
    from serving.listener import HttpServer
    from serving.state import ModelState

    config = ServingConfig.from_dict(make_config(tmp_path / "never-loaded.tflite", **overrides))
    state = ModelState(config)
    server = HttpServer(("127.0.0.1", 0), App(state), config)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(server.start(), loop).result(timeout=5)
    if ready:
        loop.call_soon_threadsafe(state.set_ready, BatchedModel(FakeRuntime(), config), loop)
    try:
        yield server.address[1]
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(timeout=5), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)


def raw_request(port: int, data: bytes) -> tuple[int, dict[str, str], Any]:
    """Send raw bytes on a new connection and parse the one response: (status, headers, JSON)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        payload = response.read()
        return response.status, dict(response.getheaders()), json.loads(payload) if payload else None


def make_config(artifact: Path | str, **overrides: Any) -> dict[str, Any]:
    """A serving.json for the tiny 4 -> 3 model (real or fake); HTTP only (gRPC's default port is a fixed one)."""
    return {
        "model_name": MODEL,
        "artifact": str(artifact),
        "host": "127.0.0.1",
        "port": 0,
        "grpc_port": None,
        "threads": 1,
        "inputs": [{"name": "features", "shape": [4], "dtype": "float32"}],
        "max_body_bytes": 4096,
        "metadata": METADATA,
        **overrides,
    }


def ready_server(config: dict[str, Any], folder: Path, command: list[str] | None = None) -> Iterator[ServerProcess]:
    """The body of a module-scoped server fixture: started and ready before the tests, stopped after."""
    server = ServerProcess(config, folder, command)
    server.wait_for("ready")
    yield server
    server.stop()


def read_response(answers: Any) -> tuple[int, Any]:
    """One HTTP/1.1 response with a Content-Length from a buffered reader: (status, JSON body)."""
    status = int(answers.readline().split()[1])
    length = 0
    while (line := answers.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode("latin-1").partition(":")
        if name.lower() == "content-length":
            length = int(value)
    return status, json.loads(answers.read(length)) if length else None


def predict_bytes(values: list[float]) -> bytes:
    """A complete predict request for one sample, as raw bytes."""
    body = json.dumps({"instances": [values]}).encode()
    return f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def build_tflite_models(folder: Path) -> dict[str, Path]:
    """A 4 -> 8 -> 3 softmax Keras model as float32 and as full-integer int8 .tflite files."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input(shape=(4,), name="features")
    hidden = tf.keras.layers.Dense(8, activation="relu")(inputs)
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(3, activation="softmax")(hidden))

    float_path = folder / "float32.tflite"
    float_path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())

    calibration = np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([row[None]] for row in calibration)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    int8_path = folder / "int8.tflite"
    int8_path.write_bytes(converter.convert())
    return {"float32": float_path, "int8": int8_path}

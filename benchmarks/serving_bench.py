"""Serving benchmark: modelstack's server against a naive FastAPI+Keras endpoint and MLServer.

    .venv/bin/python benchmarks/serving_bench.py [--duration 10] [--rounds 1] [--json out.json]

Everything runs as local processes on 127.0.0.1, measured side by side in one run with the same
load generator, wrk (closed loop: each connection sends its next request when the previous
answer arrives; ``-t2``, and ``-t1`` for the runs marked t1). The HTTP floor (ours against the raw
ASGI app, ``wrk -t1``) has its own phase first: both servers up, short runs alternating between
them (``--pair-rounds``, ``--pair-duration``), one throughput and one p99 ratio per adjacent
pair, their medians judged.
Contenders, all pinned to one inference thread:

  naive        Keras ``model.predict`` inside a FastAPI endpoint under uvicorn (1 worker),
               TF intra/inter-op threads = 1, the digits .keras model, TF Serving row format
  mlserver-pw0 MLServer 1.7 with a custom LiteRT runtime (its documented ``MLModel`` API),
               ``parallel_workers: 0`` (inference in the server process), V2 JSON
  mlserver-pw1 the same with ``parallel_workers: 1`` (MLServer's default: an inference process)
  raw-asgi     a bare ASGI app (``benchmarks/raw_asgi_app.py``: LiteRT + orjson, no validation,
               metrics or access log) on uvicorn with httptools and uvloop, one worker: the
               library ceiling for the HTTP layer
  ours         ``python -m serving.server`` unbatched (max_batch_size 1), threads 1
  ours-batch   the same with dynamic batching (max_batch_size 32, max_latency_ms 0)

Models: the digits model (trained by ``modelprep.examples.digits``, int8 LiteRT artifact from
``modelprep.prep``; the naive server runs the Keras original) and, for the batching floor, a
convolutional model built here (32x32x3 input, two conv layers, two 2048-wide dense layers,
random weights, float32 LiteRT, 50 MB) whose single-sample inference costs > 1 ms; and, measured
without a floor, the digits-cnn convolutional example (``modelprep.examples.digits_cnn``, float32
LiteRT, > 1 ms per sample), whose per-sample cost does not fall with the batch size.

Setup done by the script when missing (never touches the project's own packages):
  * wrk: ``apt-get install -y wrk`` (Debian; needs root) — ``make test`` does not use it;
  * .cache/bench-venv: a separate venv with mlserver==1.7.1 and ai-edge-litert==2.3.0;
  * .cache/naive-deps: fastapi/uvicorn (pinned, ``pip install --target``), put on PYTHONPATH
    of the project's Python for the naive server, which needs the project's TensorFlow.

The floors are checked at the end and printed with the results table (markdown).
Each run also records the server process's CPU time per request (user + system from
``/proc/<pid>/stat`` over the measured run, ``cpu_us_per_request``), printed for the raw-ASGI pair.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = REPO / ".venv" / "bin" / "python"
CACHE = REPO / ".cache"
BENCH_VENV = CACHE / "bench-venv"
NAIVE_DEPS = CACHE / "naive-deps"
# uvloop 0.22+ breaks MLServer 1.7's inference worker processes ("no current event loop").
MLSERVER_PINS = ["mlserver==1.7.1", "ai-edge-litert==2.3.0", "uvloop==0.21.0"]
NAIVE_PINS = [
    "fastapi==0.165.0",
    "starlette==1.10.0",
    "uvicorn==0.54.0",
    "h11==0.16.0",
    "anyio==4.16.0",
    "sniffio==1.3.1",
    "annotated-doc==0.0.7",
    "click==8.3.1",
]


# --- setup ---------------------------------------------------------------------------------------


def log(message: str) -> None:
    print(f"[serving-bench] {message}", file=sys.stderr, flush=True)


def ensure_tools() -> None:
    if shutil.which("wrk") is None:
        log("installing wrk (apt-get install -y wrk)")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
    if not (BENCH_VENV / "bin" / "mlserver").exists() or not _pinned(BENCH_VENV, MLSERVER_PINS):
        log(f"creating {BENCH_VENV} with {' '.join(MLSERVER_PINS)}")
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(BENCH_VENV / "bin" / "pip"), "install", "-q", *MLSERVER_PINS], check=True)
    if not (NAIVE_DEPS / "uvicorn").is_dir():
        log(f"installing {' '.join(NAIVE_PINS)} into {NAIVE_DEPS}")
        subprocess.run(
            [str(PY), "-m", "pip", "install", "-q", "--no-deps", "--target", str(NAIVE_DEPS), *NAIVE_PINS],
            check=True,
        )


def _pinned(venv: Path, pins: list[str]) -> bool:
    listed = subprocess.run([str(venv / "bin" / "pip"), "freeze"], capture_output=True, text=True).stdout
    have = {line.lower() for line in listed.splitlines()}
    return all(pin.lower() in have for pin in pins)


def _trained(folder: Path, example: str, what: str) -> Path:
    """``folder`` with ``modelprep.examples.<example>`` trained into it (once: cached)."""
    if not (folder / "model" / f"{example}.keras").is_file():
        log(f"training {what}")
        subprocess.run(
            [str(PY), "-m", f"modelprep.examples.{example}", str(folder)],
            check=True,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return folder


def prepare_models(work: Path) -> dict[str, Any]:
    """Train + prep the digits model and build the conv model (cached in ``work``)."""
    digits = _trained(work / "digits", "digits", "the digits model")
    spec = digits / "model.yaml"
    spec.write_text(
        textwrap.dedent("""\
        name: digits
        model:
          path: model/digits.keras
          inputs:
            - name: pixels
              shape: [64]
              dtype: float32
        data:
          calibration: data/calibration.npz
          evaluation: data/evaluation.npz
        optimize:
          quantization: int8
          max_accuracy_drop: 0.01
        """)
    )
    cnn = _trained(work / "cnn", "digits_cnn", "the digits-cnn example (a convolutional model)")
    conv = work / "conv"
    conv.mkdir(parents=True, exist_ok=True)
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np
        sys.path.insert(0, {str(REPO)!r})
        from iac.spec.load import load_resolved
        from modelprep.request import prep_request
        from modelprep.prep import prep
        result = prep(prep_request(load_resolved({str(spec)!r})))
        with np.load({str(digits / "data" / "evaluation.npz")!r}) as data:
            sample = data["x"][0].tolist()
        out = {{"digits_tflite": str(result.artifact_path), "digits_variant": result.report.variant,
               "digits_sample": sample}}
        conv = {str(conv)!r}
        import os
        if not os.path.exists(conv + "/conv.tflite"):
            import tensorflow as tf
            tf.keras.utils.set_random_seed(0)
            L = tf.keras.layers
            inputs = tf.keras.Input((32, 32, 3), name="image")
            x = L.Rescaling(1 / 255.0)(inputs)
            x = L.MaxPool2D()(L.Conv2D(32, 3, padding="same", activation="relu")(x))
            x = L.MaxPool2D()(L.Conv2D(64, 3, padding="same", activation="relu")(x))
            x = L.Dense(2048, activation="relu")(L.Flatten()(x))
            x = L.Dense(2048, activation="relu")(x)
            model = tf.keras.Model(inputs, L.Dense(10, activation="softmax")(x))
            model.save(conv + "/conv.keras")
            open(conv + "/conv.tflite", "wb").write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        cnn = {str(cnn)!r}
        if not os.path.exists(cnn + "/cnn.tflite"):
            from modelprep.families.keras.convert import to_litert
            artifact = to_litert(cnn + "/model/digits_cnn.keras", "none", None)  # float32
            open(cnn + "/cnn.tflite", "wb").write(artifact)
        from serving.runtime import LiteRTModel
        import time

        def cost_ms(path, shape):
            m = LiteRTModel(path, num_threads=1)
            costs = {{}}
            for n in (1, 32):
                x = np.random.default_rng(0).uniform(0, 1, size=(n, *shape)).astype(np.float32)
                m.predict(x)
                t = time.perf_counter(); k = 0
                while time.perf_counter() - t < 1.0:
                    m.predict(x); k += 1
                costs[n] = (time.perf_counter() - t) / k / n * 1000
            return {{"batch_1": round(costs[1], 3), "batch_32": round(costs[32], 3)}}

        out["conv_tflite"] = conv + "/conv.tflite"
        out["conv_ms_per_sample"] = cost_ms(out["conv_tflite"], (32, 32, 3))
        out["cnn_tflite"] = cnn + "/cnn.tflite"
        out["cnn_ms_per_sample"] = cost_ms(out["cnn_tflite"], (32, 32, 1))
        print(json.dumps(out))
        """)
    log("prepping the digits model (cached) and building the conv model")
    done = subprocess.run([str(PY), "-c", script], check=True, cwd=REPO, capture_output=True, text=True)
    info = json.loads(done.stdout.strip().splitlines()[-1])
    info["digits_keras"] = str(digits / "model" / "digits.keras")
    return info


# --- servers ---------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    ready_path: str
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path = REPO
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def start(self, logs: Path, timeout: float = 180.0) -> None:
        self.log_path = logs / f"{self.name}.log"
        handle = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=self.cwd,
            env={**os.environ, **self.env},
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{self.ready_path}", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout} s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


NAIVE_APP = """
import os
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
from fastapi import FastAPI
from pydantic import BaseModel

model = tf.keras.models.load_model(os.environ["NAIVE_MODEL"])
app = FastAPI()

class PredictRequest(BaseModel):
    instances: list[list[float]]

@app.get("/healthz")
def healthz():
    return {"status": "ok"}

@app.post("/v1/models/digits:predict")
def predict(request: PredictRequest):
    x = np.array(request.instances, dtype=np.float32)
    return {"predictions": model.predict(x, verbose=0).tolist()}
"""

MLSERVER_RUNTIME = '''
"""A LiteRT runtime for MLServer, written against its documented custom-runtime API."""
import threading

import numpy as np
from ai_edge_litert.interpreter import Interpreter
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class LiteRTRuntime(MLModel):
    async def load(self) -> bool:
        self._interpreter = Interpreter(model_path=self.settings.parameters.uri, num_threads=1)
        self._interpreter.allocate_tensors()
        self._in = self._interpreter.get_input_details()[0]
        self._out = self._interpreter.get_output_details()[0]
        self._in_scale, self._in_zero = self._in["quantization"]
        self._out_scale, self._out_zero = self._out["quantization"]
        self._shape = tuple(self._in["shape"])
        self._lock = threading.Lock()
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        if self._in_scale:
            x = np.clip(np.round(x / self._in_scale) + self._in_zero, -128, 127).astype(self._in["dtype"])
        with self._lock:
            if x.shape != self._shape:
                self._interpreter.resize_tensor_input(self._in["index"], list(x.shape))
                self._interpreter.allocate_tensors()
                self._shape = x.shape
            self._interpreter.set_tensor(self._in["index"], x)
            self._interpreter.invoke()
            y = self._interpreter.get_tensor(self._out["index"])
        if self._out_scale:
            y = (y.astype(np.float32) - self._out_zero) * self._out_scale
        return InferenceResponse(
            model_name=self.name, outputs=[NumpyCodec.encode_output("output_0", y)]
        )
'''


def naive_server(info: dict[str, Any], logs: Path) -> Server:
    app_dir = logs / "naive"
    app_dir.mkdir(exist_ok=True)
    (app_dir / "naive_app.py").write_text(NAIVE_APP)
    port = free_port()
    return Server(
        "naive",
        [str(PY), "-m", "uvicorn", "naive_app:app", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        port,
        "/healthz",
        cwd=app_dir,
        env={
            "PYTHONPATH": f"{NAIVE_DEPS}:{app_dir}",
            "NAIVE_MODEL": info["digits_keras"],
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "OMP_NUM_THREADS": "1",
        },
    )


def mlserver_server(info: dict[str, Any], logs: Path, parallel_workers: int) -> Server:
    root = logs / f"mlserver-pw{parallel_workers}"
    (root / "digits").mkdir(parents=True, exist_ok=True)
    (root / "litert_runtime.py").write_text(MLSERVER_RUNTIME)
    port = free_port()
    (root / "settings.json").write_text(
        json.dumps(
            {
                "host": "127.0.0.1",
                "http_port": port,
                "grpc_port": free_port(),
                "metrics_port": free_port(),
                "parallel_workers": parallel_workers,
                "debug": False,
            }
        )
    )
    (root / "digits" / "model-settings.json").write_text(
        json.dumps(
            {
                "name": "digits",
                "implementation": "litert_runtime.LiteRTRuntime",
                "parameters": {"uri": info["digits_tflite"]},
            }
        )
    )
    return Server(
        f"mlserver-pw{parallel_workers}",
        [str(BENCH_VENV / "bin" / "mlserver"), "start", str(root)],
        port,
        "/v2/models/digits/ready",
        cwd=root,
        env={"PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"},
    )


def raw_asgi_server(info: dict[str, Any]) -> Server:
    port = free_port()
    return Server(
        "raw-asgi",
        [
            str(PY),
            "-m",
            "uvicorn",
            "benchmarks.raw_asgi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--http",
            "httptools",
            "--loop",
            "uvloop",
            "--workers",
            "1",
            "--no-access-log",
            "--log-level",
            "warning",
        ],
        port,
        "/",
        env={"RAW_MODEL": info["digits_tflite"]},
    )


def our_server(
    name: str,
    model: str,
    artifact: str,
    shape: list[int],
    input_name: str,
    logs: Path,
    max_batch_size: int,
    max_latency_ms: float = 0.0,
) -> Server:
    port = free_port()
    config = logs / f"{name}.json"
    config.write_text(
        json.dumps(
            {
                "model_name": model,
                "artifact": artifact,
                "host": "127.0.0.1",
                "port": port,
                "threads": 1,
                "inputs": [{"name": input_name, "shape": shape, "dtype": "float32"}],
                "max_batch_size": max_batch_size,
                "max_latency_ms": max_latency_ms,
            }
        )
    )
    return Server(
        name,
        [str(PY), "-m", "serving.server"],
        port,
        "/readyz",
        env={"MODELSTACK_SERVING_CONFIG": str(config), "PYTHONPATH": str(REPO)},
    )


# --- load ------------------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open(os.getenv("BENCH_BODY"), "rb"):read()
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50":%d,"p95":%d,"p99":%d,"max":%d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    url: str,
    body: bytes,
    concurrency: int,
    duration: float,
    work: Path,
    threads: int = 2,
    pid: int | None = None,
    warm_up: bool = True,
) -> dict[str, Any]:
    """One wrk run; with the server's ``pid``, also its CPU time per request (user + system), which
    the machine's other load disturbs far less than throughput does."""
    script = work / "bench.lua"
    script.write_text(WRK_SCRIPT)
    body_file = work / "body.json"
    body_file.write_bytes(body)
    env = {**os.environ, "BENCH_BODY": str(body_file)}
    threads_arg = str(min(threads, concurrency))
    load = os.getloadavg()[0]
    if warm_up:
        subprocess.run(
            ["wrk", "-t", threads_arg, "-c", str(concurrency), "-d", "2s", "-s", str(script), url],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    done = subprocess.run(
        [
            "wrk",
            "-t",
            threads_arg,
            "-c",
            str(concurrency),
            "-d",
            f"{duration:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    cpu = cpu_seconds(pid) - cpu_before if pid is not None else None
    line = next(out for out in done.stdout.splitlines() if out.startswith("RESULT "))
    raw = json.loads(line[len("RESULT ") :])
    errors = raw["non2xx"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    seconds = raw["duration_us"] / 1e6
    return {
        "throughput_rps": round((raw["requests"] - raw["non2xx"]) / seconds, 1),
        "p50_ms": raw["p50"] / 1000,
        "p95_ms": raw["p95"] / 1000,
        "p99_ms": raw["p99"] / 1000,
        "max_ms": raw["max"] / 1000,
        "requests": raw["requests"],
        "errors": errors,
        "load1_before": round(load, 1),
        **(
            {"cpu_us_per_request": round(cpu / raw["requests"] * 1e6, 1)} if cpu is not None and raw["requests"] else {}
        ),
    }


def check_response(url: str, body: bytes) -> None:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200, url
        json.loads(response.read())


# --- main ------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run (after 2 s warm-up)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat every run; the median round is reported")
    parser.add_argument("--work", type=Path, default=CACHE / "serving-bench")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--only", help="comma-separated servers to run (e.g. raw-asgi,ours); floors need all")
    parser.add_argument(
        "--pair-rounds",
        type=int,
        default=8,
        help="alternating runs of the raw ASGI app and ours (wrk -t1), each pair one ratio",
    )
    parser.add_argument("--pair-duration", type=float, default=4.0, help="measured seconds per pair run")
    args = parser.parse_args()

    ensure_tools()
    args.work.mkdir(parents=True, exist_ok=True)
    info = prepare_models(args.work)
    log(f"cost per sample: conv {info['conv_ms_per_sample']} ms, digits-cnn {info['cnn_ms_per_sample']} ms")
    logs = Path(tempfile.mkdtemp(prefix="serving-bench-"))
    log(f"server logs in {logs}")

    sample = info["digits_sample"]
    v1_digits = json.dumps({"instances": [sample]}).encode()
    v2_digits = json.dumps(
        {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": sample}]}
    ).encode()
    import random

    rng = random.Random(0)
    image = [[[rng.randint(0, 255) for _ in range(3)] for _ in range(32)] for _ in range(32)]
    v1_conv = json.dumps({"instances": [image]}).encode()
    v1_cnn = json.dumps({"instances": [[[[rng.random()] for _ in range(32)] for _ in range(32)]]}).encode()

    servers = {
        "naive": naive_server(info, logs),
        "mlserver-pw0": mlserver_server(info, logs, 0),
        "mlserver-pw1": mlserver_server(info, logs, 1),
        "raw-asgi": raw_asgi_server(info),
        "ours": our_server("ours", "digits", info["digits_tflite"], [64], "pixels", logs, 1),
        "ours-batch": our_server("ours-batch", "digits", info["digits_tflite"], [64], "pixels", logs, 32),
        "conv-ours": our_server("conv-ours", "conv", info["conv_tflite"], [32, 32, 3], "image", logs, 1),
        "conv-ours-batch": our_server("conv-ours-batch", "conv", info["conv_tflite"], [32, 32, 3], "image", logs, 32),
        "cnn-ours": our_server("cnn-ours", "cnn", info["cnn_tflite"], [32, 32, 1], "image", logs, 1),
        "cnn-ours-batch": our_server("cnn-ours-batch", "cnn", info["cnn_tflite"], [32, 32, 1], "image", logs, 32),
    }
    v1, v2 = "/v1/models/digits:predict", "/v2/models/digits/infer"
    # Runs that are compared sit next to each other (the machine's load drifts): MLServer right
    # before ours on V2 at c=16, and the two c=64 runs of each model back to back.
    plan: list[tuple[Any, ...]] = [
        ("digits", "naive", "naive", v1, v1_digits, 16),
        ("digits", "mlserver-pw1", "mlserver-pw1", v2, v2_digits, 16),
        ("digits", "mlserver-pw0", "mlserver-pw0", v2, v2_digits, 16),
        # The raw ASGI app with wrk -t2 (no floor; the floor's wrk -t1 pair is the pair phase below).
        ("digits", "raw-asgi v1", "raw-asgi", v1, v1_digits, 16),
        ("digits", "ours v2", "ours", v2, v2_digits, 16),
        ("digits", "ours v1", "ours", v1, v1_digits, 16),
        ("digits", "ours v1", "ours", v1, v1_digits, 64),
        ("digits", "ours-batch v1", "ours-batch", v1, v1_digits, 64),
        ("digits", "ours-batch v1", "ours-batch", v1, v1_digits, 16),
        ("digits", "ours-batch v2", "ours-batch", v2, v2_digits, 16),
        ("conv", "ours v1", "conv-ours", "/v1/models/conv:predict", v1_conv, 64),
        ("conv", "ours-batch v1", "conv-ours-batch", "/v1/models/conv:predict", v1_conv, 64),
        ("digits-cnn", "ours v1", "cnn-ours", "/v1/models/cnn:predict", v1_cnn, 64),
        ("digits-cnn", "ours-batch v1", "cnn-ours-batch", "/v1/models/cnn:predict", v1_cnn, 64),
    ]
    keep = set(args.only.split(",")) if args.only else set(servers)
    plan = [entry for entry in plan if entry[2] in keep]
    results: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    pair: list[dict[str, dict[str, Any]]] = []
    try:
        if {"raw-asgi", "ours"} <= keep:
            pair = pair_phase(
                servers["raw-asgi"], servers["ours"], v1, v1_digits, args.pair_rounds, args.pair_duration, logs
            )
        for round_ in range(args.rounds):
            for server_name in dict.fromkeys(entry[2] for entry in plan):
                server = servers[server_name]
                log(f"round {round_ + 1}: starting {server_name}")
                server.start(logs)
                try:
                    for model, label, name, path, body, concurrency, *threads in plan:
                        if name != server_name:
                            continue
                        url = f"http://127.0.0.1:{server.port}{path}"
                        check_response(url, body)
                        assert server.proc is not None
                        result = run_wrk(url, body, concurrency, args.duration, logs, *threads, pid=server.proc.pid)
                        log(f"  {model} {label} c={concurrency}: {result}")
                        results.setdefault((model, label, concurrency), []).append(result)
                finally:
                    server.stop()
    finally:
        for server in servers.values():
            server.stop()

    table = {key: _median(rounds) for key, rounds in results.items()}
    per_round = [{key: runs[i] for key, runs in results.items()} for i in range(args.rounds)]
    report = render(table, per_round, pair, info, args)
    print(report)
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "results": [{"model": m, "server": s, "concurrency": c, **r} for (m, s, c), r in table.items()],
                    "rounds": {f"{m}|{s}|{c}": r for (m, s, c), r in results.items()},
                    "pair": pair,
                    "conv_ms_per_sample": info["conv_ms_per_sample"],
                    "cnn_ms_per_sample": info["cnn_ms_per_sample"],
                    "digits_variant": info["digits_variant"],
                },
                indent=2,
            )
        )
    return 0


def pair_phase(
    raw: Server, ours: Server, path: str, body: bytes, rounds: int, duration: float, logs: Path
) -> list[dict[str, dict[str, Any]]]:
    """The HTTP floor's measurement: the raw ASGI app and ours, both running, measured in short
    alternating runs (wrk -t1 -c16; raw-ours, then ours-raw, ...) so that each pair of runs sees
    the same machine: this host's speed drifts by 10-30% within a minute, more than the gap
    being measured. Each pair gives one ratio (and one p99 ratio); the floor takes their medians."""
    for server in (raw, ours):
        server.start(logs)
    try:
        urls = {name: f"http://127.0.0.1:{server.port}{path}" for name, server in (("raw", raw), ("ours", ours))}
        pids = {"raw": raw.proc.pid, "ours": ours.proc.pid}  # type: ignore[union-attr]
        for _name, url in urls.items():
            check_response(url, body)
            run_wrk(url, body, 16, 2.0, logs, 1, warm_up=False)  # the warm-up: one 2 s run
        slots = []
        for i in range(rounds):
            slot = {}
            for name in ("raw", "ours") if i % 2 == 0 else ("ours", "raw"):
                slot[name] = run_wrk(urls[name], body, 16, duration, logs, 1, pid=pids[name], warm_up=False)
            ratio = slot["ours"]["throughput_rps"] / slot["raw"]["throughput_rps"]
            log(f"  pair {i + 1}: ours {slot['ours']} raw {slot['raw']} -> {ratio:.2f}x")
            slots.append(slot)
        return slots
    finally:
        for server in (raw, ours):
            server.stop()


def pair_ratios(pair: list[dict[str, dict[str, Any]]]) -> tuple[list[float], list[float]]:
    """Per pair, ours / raw: throughput and p99 latency (both servers measured in the same minute)."""
    return (
        [slot["ours"]["throughput_rps"] / slot["raw"]["throughput_rps"] for slot in pair],
        [slot["ours"]["p99_ms"] / slot["raw"]["p99_ms"] for slot in pair],
    )


def pair_floor(pair: list[dict[str, dict[str, Any]]]) -> tuple[str, float, float, bool]:
    """The HTTP floor from the pair phase: the median of the per-pair throughput ratios, and p99 as
    the median of the per-pair p99 ratios (<= 1: no worse). Judging p99 per pair, like throughput,
    compares the two servers under the same conditions; medians of each server's p99 over the
    whole phase would mix minutes in which the host ran 10-30% apart."""
    ratios, p99_ratios = pair_ratios(pair)
    return (
        "ours >= 1.0x the raw ASGI app on uvicorn+httptools+uvloop, p99 no worse (digits, c=16, "
        f"TF Serving REST, wrk -t1; median of {len(pair)} alternating pairs)",
        statistics.median(ratios),
        1.0,
        statistics.median(p99_ratios) <= 1.0,
    )


def floors(table: dict[tuple[str, str, int], dict[str, Any]]) -> list[tuple[str, float, float, bool]]:
    """(floor, ratio, needed ratio, latency condition holds) from one round's runs (those run)."""

    def get(model: str, label: str, c: int) -> dict[str, Any]:
        return table[(model, label, c)]

    def naive() -> list[tuple[str, float, float, bool]]:
        base = get("digits", "naive", 16)
        return [
            (
                f"{label.split()[0]} >= 50x naive throughput (digits, c=16, TF Serving REST both)",
                get("digits", label, 16)["throughput_rps"] / base["throughput_rps"],
                50.0,
                True,
            )
            for label in ("ours v1", "ours-batch v1")
        ]

    def mlserver() -> list[tuple[str, float, float, bool]]:
        mls = max(
            get("digits", "mlserver-pw0", 16), get("digits", "mlserver-pw1", 16), key=lambda r: r["throughput_rps"]
        )
        return [
            (
                f"{label.split()[0]} >= 1.5x the best MLServer setup, p99 no worse (digits, c=16, V2 both)",
                get("digits", label, 16)["throughput_rps"] / mls["throughput_rps"],
                1.5,
                get("digits", label, 16)["p99_ms"] <= mls["p99_ms"],
            )
            for label in ("ours v2", "ours-batch v2")
        ]

    def batching() -> list[tuple[str, float, float, bool]]:
        unb, bat = get("conv", "ours v1", 64), get("conv", "ours-batch v1", 64)
        d_unb, d_bat = get("digits", "ours v1", 64), get("digits", "ours-batch v1", 64)
        return [
            (
                "batching >= 2x unbatched throughput, p99 <= 2x unbatched (conv, c=64)",
                bat["throughput_rps"] / unb["throughput_rps"],
                2.0,
                bat["p99_ms"] <= 2 * unb["p99_ms"],
            ),
            (
                "batching does not lose throughput (digits, c=64)",
                d_bat["throughput_rps"] / d_unb["throughput_rps"],
                1.0,
                True,
            ),
        ]

    result = []
    for part in (naive, mlserver, batching):
        try:
            result += part()
        except KeyError:  # not run (--only)
            pass
    return result


def _median(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    ordered = sorted(rounds, key=lambda r: r["throughput_rps"])
    return ordered[(len(ordered) - 1) // 2] if len(ordered) % 2 else ordered[len(ordered) // 2 - 1]


def render(
    table: dict[tuple[str, str, int], dict[str, Any]],
    per_round: list[dict[tuple[str, str, int], dict[str, Any]]],
    pair: list[dict[str, dict[str, Any]]],
    info: dict[str, Any],
    args: argparse.Namespace,
) -> str:
    lines = [
        "| model | server | protocol | c | requests/s | p50 ms | p95 ms | p99 ms | errors |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    rows = list(table.items())
    if pair:  # the pair phase's medians head the table
        rows = [
            (("digits", f"{name} v1 t1", 16), _median([slot[key] for slot in pair]))
            for name, key in (("raw-asgi", "raw"), ("ours", "ours"))
        ] + rows
    for (model, label, c), r in rows:
        server, _, protocol = label.partition(" ")
        protocol = protocol or ("v2" if server.startswith("mlserver") else "v1")
        protocol = protocol.replace(" t1", " (wrk -t1, pair phase)")
        lines.append(
            f"| {model} | {server} | {protocol} | {c} | {r['throughput_rps']:,.0f} | {r['p50_ms']:.2f} | "
            f"{r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |"
        )

    checks = [floors(r) for r in per_round]
    lines += [
        "",
        "| floor (evaluated in each round; ratio = median over rounds) | ratio | needed | rounds where it holds |",
        "|---|---:|---:|---|",
    ]
    if pair:
        name, ratio, need, latency_ok = pair_floor(pair)
        ratios, p99_ratios = pair_ratios(pair)
        lines.append(
            f"| {name} | {ratio:.2f}x | {need:g}x | median {'holds' if ratio >= need and latency_ok else 'does not hold'}"
            f" (p99 {'ok' if latency_ok else 'worse'}: median p99 ratio {statistics.median(p99_ratios):.2f}); "
            f"ours ahead in {sum(r >= 1.0 for r in ratios)}/{len(ratios)} pairs, "
            f"p99 no worse in {sum(r <= 1.0 for r in p99_ratios)}/{len(p99_ratios)} |"
        )
    for i, (name, _, need, _) in enumerate(checks[0] if checks else ()):
        ratios = [round_checks[i][1] for round_checks in checks]
        held = [ratio >= need and latency_ok for _, ratio, need, latency_ok in (c[i] for c in checks)]
        detail = ", ".join(
            f"{'yes' if h else 'no'} ({c[i][3] and 'p99 ok' or 'p99 worse'}, {c[i][1]:.2f}x)"
            for h, c in zip(held, checks)
        )
        lines.append(f"| {name} | {statistics.median(ratios):.2f}x | {need:g}x | {sum(held)}/{len(held)}: {detail} |")
    cnn = [
        r[("digits-cnn", "ours-batch v1", 64)]["throughput_rps"] / r[("digits-cnn", "ours v1", 64)]["throughput_rps"]
        for r in per_round
        if ("digits-cnn", "ours v1", 64) in r
    ]
    pairs = [(slot["ours"], slot["raw"]) for slot in pair]
    pairs_t2 = [
        (r[("digits", "ours v1", 16)], r[("digits", "raw-asgi v1", 16)])
        for r in per_round
        if ("digits", "raw-asgi v1", 16) in r and ("digits", "ours v1", 16) in r
    ]
    for runs, title in (
        (pairs, "per pair (wrk -t1, c=16; the floor)"),
        (pairs_t2, "per round (wrk -t2, c=16; no floor: two wrk threads and the server share 2 CPUs)"),
    ):
        if runs:
            lines += [
                "",
                f"ours / raw ASGI {title}: "
                + "; ".join(
                    f"{i + 1}: {o['throughput_rps'] / w['throughput_rps']:.2f}x "
                    f"({o['throughput_rps']:,.0f} vs {w['throughput_rps']:,.0f} req/s), "
                    f"p99 {o['p99_ms']:.2f} vs {w['p99_ms']:.2f} ms"
                    + (
                        f", server CPU {o['cpu_us_per_request']:.1f} vs {w['cpu_us_per_request']:.1f} µs/request"
                        if "cpu_us_per_request" in o and "cpu_us_per_request" in w
                        else ""
                    )
                    for i, (o, w) in enumerate(runs)
                ),
            ]
    if cnn:
        lines += [
            "",
            "Also measured (no floor): batching on the digits-cnn example (float32 LiteRT, c=64): "
            + ", ".join(f"{ratio:.2f}x" for ratio in cnn)
            + " the unbatched throughput.",
        ]
    lines += [
        "",
        f"conv model: {info['conv_ms_per_sample']['batch_1']:.2f} ms per sample alone, "
        f"{info['conv_ms_per_sample']['batch_32']:.2f} ms per sample in batches of 32; digits-cnn (float32): "
        f"{info['cnn_ms_per_sample']['batch_1']:.2f} ms alone, {info['cnn_ms_per_sample']['batch_32']:.2f} ms "
        "in batches of 32 (LiteRT, 1 thread); "
        f"digits artifact: {info['digits_variant']}; wrk -t2 (-t1 where marked), {args.duration:g} s per run "
        f"after 2 s warm-up, median of {args.rounds} round(s); pair phase: {len(pair)} pairs of "
        f"{args.pair_duration:g} s runs; {os.cpu_count()} CPUs, load average at the end "
        f"{os.getloadavg()[0]:.1f}.",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

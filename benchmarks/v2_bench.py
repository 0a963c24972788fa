"""Open Inference Protocol benchmark: V2 JSON vs V2 binary (HTTP) vs gRPC ModelInfer, one server, one run.

    .venv/bin/python benchmarks/v2_bench.py [--duration 8] [--rounds 3] [--concurrency 16] [--json out.json]

One ``python -m serving.server`` (defaults: batching off, one thread, access log and metrics
on) serves a small model with a 32x32x3 float32 input, built here (a 3x3 convolution with 8
filters, stride 2, global average pooling, a 10-way softmax; float32 LiteRT), so the
protocol's cost dominates, not the model's. The same sample goes out three ways:

  v2-json     POST /v2/models/<name>/infer, the tensor as a JSON list of 3,072 numbers
  v2-binary   the same route with the binary data extension, as tritonclient.http sends it by
              default (JSON header + 12,288 raw bytes, the output asked for as binary)
  grpc-raw    ModelInfer with raw_input_contents, as tritonclient.grpc sends it
  grpc-ghz    the same calls from ghz instead of h2load: the same server under a heavier load
              generator, to show what the generator costs (no floor)
  grpc-aio    the same calls to the same handlers with grpc.aio as the transport instead of tonic
              (benchmarks/grpc_aio_variant.py; the server's transport until 2026-12-02): the
              best Python gRPC server, measured to show why the server does not use it

Load generators, each closed-loop at the same concurrency on one thread: wrk (-t1, a Lua
script that sends the body and its headers) for HTTP; h2load (nghttp2's HTTP/2 load generator,
C, Debian's nghttp2-client; -t1 -c1 -m16: one HTTP/2 connection with 16 calls in flight, as gRPC
clients use) for gRPC, sending the unary call as gRPC frames it on the wire: the 5-byte length
prefix and the ModelInferRequest serialized from our own .proto, with ``content-type:
application/grpc`` and ``te: trailers``. h2load does not read trailers, so it cannot see a
call's grpc-status: a call counts only when the server counted it OK (its metrics, or the grpc.aio
variant's count), and the answer is checked with tritonclient.grpc before anything is
measured. ghz (Go, ``go install github.com/bojand/ghz/cmd/ghz``, ``--cpus 1``, one connection)
runs too, as grpc-ghz. Every run reports the generator's CPU (its rusage) and the server's CPU
per answered call (/proc/<pid>/stat). Rounds are interleaved (binary, json, grpc, ghz, aio,
binary, ...: each floor's two sides run back to back); the floors are checked in each round and
the median round is reported.

Floors: v2-binary >= 1.5x v2-json; grpc-raw >= 3x v2-json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PY = REPO / ".venv" / "bin" / "python"
CACHE = REPO / ".cache" / "v2-bench"
GHZ_MODULE = "github.com/bojand/ghz/cmd/ghz@v0.93.0"
MODEL = "small"
FLOORS = (("v2-binary", "v2-json", 1.5), ("grpc-raw", "v2-json", 3.0))


def log(message: str) -> None:
    print(f"[v2-bench] {message}", file=sys.stderr, flush=True)


# --- setup ---------------------------------------------------------------------------------------


def ensure_tools() -> str:
    """wrk and h2load from Debian, ghz built from its Go module into .tools/bin (each once)."""
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if shutil.which(tool) is None:
            log(f"installing {tool} (apt-get install -y {package})")
            subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, stdout=subprocess.DEVNULL)
    ghz = REPO / ".tools" / "bin" / "ghz"
    if not ghz.exists():
        log(f"building ghz (go install {GHZ_MODULE})")
        env = {**os.environ, "GOBIN": str(ghz.parent), "GOFLAGS": "-mod=mod"}
        subprocess.run(["go", "install", GHZ_MODULE], check=True, env=env)
    return str(ghz)


def build_model() -> Path:
    """The 32x32x3 float32 LiteRT model (built once with TensorFlow, in a subprocess)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / "small.tflite"
    if path.exists():
        return path
    script = textwrap.dedent(f"""
        import tensorflow as tf
        tf.keras.utils.set_random_seed(0)
        L = tf.keras.layers
        inputs = tf.keras.Input((32, 32, 3), name="image")
        x = L.Conv2D(8, 3, strides=2, activation="relu")(inputs)
        x = L.GlobalAveragePooling2D()(x)
        model = tf.keras.Model(inputs, L.Dense(10, activation="softmax")(x))
        open({str(path)!r}, "wb").write(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        """)
    log("building the 32x32x3 model (TensorFlow, once)")
    subprocess.run(
        [str(PY), "-c", script],
        check=True,
        cwd=REPO,
        capture_output=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class AioVariant:
    """benchmarks/grpc_aio_variant.py: the same model and handlers on grpc.aio instead of tonic."""

    def __init__(self, artifact: Path, logs: Path) -> None:
        config = logs / "aio-variant.json"
        config.write_text(
            json.dumps(
                {
                    "model_name": MODEL,
                    "artifact": str(artifact),
                    "host": "127.0.0.1",
                    "port": 0,  # unused: the variant serves gRPC only
                    "grpc_port": 0,
                    "threads": 1,
                    "inputs": [{"name": "image", "shape": [32, 32, 3], "dtype": "float32"}],
                }
            )
        )
        self.proc = subprocess.Popen(
            [str(PY), str(REPO / "benchmarks" / "grpc_aio_variant.py")],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=(logs / "aio-variant.log").open("wb"),
            text=True,
            env={**os.environ, "MODELSTACK_SERVING_CONFIG": str(config), "PYTHONPATH": str(REPO)},
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"the grpc.aio variant did not start; see {logs / 'aio-variant.log'}")
        self.grpc_port = int(line.split()[1])

    def ok_calls(self) -> int:
        """ModelInfer calls the variant answered OK so far (it prints the count on SIGUSR1)."""
        assert self.proc.stdout is not None
        self.proc.send_signal(signal.SIGUSR1)
        return int(self.proc.stdout.readline().split()[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)


class OurServer:
    """``python -m serving.server`` with HTTP and gRPC on free ports."""

    def __init__(self, artifact: Path, logs: Path) -> None:
        self.port, self.grpc_port = free_port(), free_port()
        config = logs / "serving.json"
        config.write_text(
            json.dumps(
                {
                    "model_name": MODEL,
                    "artifact": str(artifact),
                    "host": "127.0.0.1",
                    "port": self.port,
                    "grpc_port": self.grpc_port,
                    "threads": 1,
                    "inputs": [{"name": "image", "shape": [32, 32, 3], "dtype": "float32"}],
                }
            )
        )
        self.log = (logs / "server.log").open("wb")
        self.proc = subprocess.Popen(
            [str(PY), "-m", "serving.server"],
            cwd=REPO,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MODELSTACK_SERVING_CONFIG": str(config), "PYTHONPATH": str(REPO)},
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited; see {logs / 'server.log'}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("the server did not get ready in 60 s")

    def ok_calls(self) -> int:
        """ModelInfer calls answered OK so far, from the server's metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as answer:
            text = answer.read().decode()
        found = re.search(r'modelstack_requests_total\{route="grpc_infer",status="200"\} (\d+)', text)
        return int(found.group(1)) if found else 0

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)


# --- requests ------------------------------------------------------------------------------------


def bodies(work: Path) -> dict[str, Any]:
    """The one sample as a V2 JSON body, a binary-extension body and a serialized ModelInferRequest."""
    import numpy as np

    sys.path.insert(0, str(REPO))
    from serving.proto import grpc_service_pb2 as pb

    sample = np.random.default_rng(0).uniform(0, 1, size=(1, 32, 32, 3)).astype(np.float32)
    tensor = {"name": "image", "shape": [1, 32, 32, 3], "datatype": "FP32"}
    json_body = json.dumps({"inputs": [{**tensor, "data": sample.ravel().tolist()}]}).encode()
    raw = sample.tobytes()
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    message = pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="image", datatype="FP32", shape=[1, 32, 32, 3])],
        raw_input_contents=[raw],
    )
    files = {
        "json": work / "v2.json",
        "binary": work / "v2.bin",
        "grpc": work / "infer.pb",
        "grpc-frame": work / "infer.grpc",
    }
    files["json"].write_bytes(json_body)
    files["binary"].write_bytes(header + raw)
    serialized = message.SerializeToString()
    files["grpc"].write_bytes(serialized)
    # One gRPC message as it goes on the wire: not compressed (0), then its length, big-endian.
    files["grpc-frame"].write_bytes(b"\0" + struct.pack(">I", len(serialized)) + serialized)
    grpc_size = len(files["grpc-frame"].read_bytes())
    return {
        "files": files,
        "header_length": len(header),
        "sizes": {
            "v2-json": len(json_body),
            "v2-binary": len(header) + len(raw),
            "grpc-raw": grpc_size,
            "grpc-ghz": grpc_size,
            "grpc-aio": grpc_size,
        },
    }


def check_answers(server: OurServer, info: dict[str, Any], aio: AioVariant) -> None:
    """Each form gets a 200 / OK with the same output before anything is measured."""
    import numpy as np
    import tritonclient.grpc as grpcclient

    sys.path.insert(0, str(REPO))
    import grpc

    from serving.proto import grpc_service_pb2 as pb
    from serving.proto import grpc_service_pb2_grpc as pb_grpc

    url = f"http://127.0.0.1:{server.port}/v2/models/{MODEL}/infer"
    with urllib.request.urlopen(urllib.request.Request(url, data=info["files"]["json"].read_bytes()), timeout=10) as r:
        from_json = np.array(json.loads(r.read())["outputs"][0]["data"], dtype=np.float32)
    request = urllib.request.Request(
        url,
        data=info["files"]["binary"].read_bytes(),
        headers={
            "Content-Type": "application/octet-stream",
            "Inference-Header-Content-Length": str(info["header_length"]),
        },
    )
    with urllib.request.urlopen(request, timeout=10) as r:
        length = int(r.headers["Inference-Header-Content-Length"])
        from_binary = np.frombuffer(r.read()[length:], dtype="<f4")
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            pb.ModelInferRequest.FromString(info["files"]["grpc"].read_bytes())
        )
        from_grpc = np.frombuffer(answer.raw_output_contents[0], dtype="<f4")
    np.testing.assert_allclose(from_binary, from_json, rtol=1e-6)
    np.testing.assert_allclose(from_grpc, from_json, rtol=1e-6)
    sample = np.frombuffer(
        pb.ModelInferRequest.FromString(info["files"]["grpc"].read_bytes()).raw_input_contents[0], dtype="<f4"
    ).reshape(1, 32, 32, 3)
    for port in (server.grpc_port, aio.grpc_port):  # the client the gRPC rows stand for
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = grpcclient.InferInput("image", [1, 32, 32, 3], "FP32")
        tensor.set_data_from_numpy(sample)
        np.testing.assert_allclose(client.infer(MODEL, [tensor]).as_numpy("output_0").ravel(), from_json, rtol=1e-6)
        client.close()


WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = io.open(os.getenv("BENCH_BODY"), "rb"):read("*a")
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE")
local header_length = os.getenv("BENCH_HEADER_LENGTH")
if header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d,' ..
    '"p50":%d,"p99":%d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(
    url: str, body: Path, header_length: int | None, concurrency: int, duration: float, work: Path, meter: Meter
) -> dict[str, Any]:
    script = work / "v2.lua"
    script.write_text(WRK_SCRIPT)
    env = {
        **os.environ,
        "BENCH_BODY": str(body),
        "BENCH_CONTENT_TYPE": "application/json" if header_length is None else "application/octet-stream",
        "BENCH_HEADER_LENGTH": "" if header_length is None else str(header_length),
    }
    argv = ["wrk", "-t1", "-c", str(concurrency), "--timeout", "10s", "-s", str(script), url]
    subprocess.run([*argv[:1], *argv[1:], "-d", "2s"], env=env, capture_output=True, check=True)  # warm-up
    with meter:
        done = subprocess.run([*argv, "-d", f"{duration:g}s"], env=env, capture_output=True, text=True, check=True)
    raw = json.loads(next(out for out in done.stdout.splitlines() if out.startswith("RESULT "))[7:])
    seconds = raw["duration_us"] / 1e6
    errors = raw["non2xx"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {
        "rps": round((raw["requests"] - raw["non2xx"]) / seconds, 1),
        "p50_ms": raw["p50"] / 1000,
        "p99_ms": raw["p99"] / 1000,
        "errors": errors,
    }


def run_ghz(ghz: str, port: int, message: Path, concurrency: int, duration: float, meter: Meter) -> dict[str, Any]:
    argv = [
        ghz,
        "--insecure",
        "--proto",
        str(REPO / "serving" / "proto" / "grpc_service.proto"),
        "--import-paths",
        str(REPO),
        "--call",
        "inference.GRPCInferenceService.ModelInfer",
        "--binary-file",
        str(message),
        "-c",
        str(concurrency),
        "--connections",
        "1",
        "--cpus",
        "1",
        "--format",
        "json",
        f"127.0.0.1:{port}",
    ]
    subprocess.run([*argv, "-z", "2s"], capture_output=True, check=True)  # warm-up
    with meter:
        done = subprocess.run([*argv, "-z", f"{duration:g}s"], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    ok = report.get("statusCodeDistribution", {}).get("OK", 0)
    # ghz ends a timed run by closing its connection: the calls in flight then (at most one per
    # worker) fail on the client's side with "transport is closing" or "the client connection is
    # closing"; they are not server errors.
    messages = report.get("errorDistribution") or {}
    cut = sum(
        n
        for message, n in messages.items()
        if "transport is closing" in message or "client connection is closing" in message
    )
    latencies = {d["percentage"]: d["latency"] for d in report.get("latencyDistribution") or []}
    return {
        "rps": round(ok / (report["total"] / 1e9), 1),
        "p50_ms": latencies.get(50, 0) / 1e6,
        "p99_ms": latencies.get(99, 0) / 1e6,
        "errors": report["count"] - ok - min(cut, concurrency),
        "cut_at_end": cut,
        "error_messages": messages,
    }


def run_h2load(
    port: int, frame: Path, concurrency: int, duration: float, work: Path, ok_calls: Callable[[], int], meter: Meter
) -> dict[str, Any]:
    """h2load sending unary ModelInfer calls; a call counts when the server counted it OK."""
    requests = work / "h2load.log"
    argv = [
        "h2load",
        "-t1",
        "-c1",
        "-m",
        str(concurrency),
        "-d",
        str(frame),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        f"http://127.0.0.1:{port}/inference.GRPCInferenceService/ModelInfer",
    ]
    subprocess.run([*argv, "-D", "2"], capture_output=True, check=True)  # warm-up
    before = ok_calls()
    with meter:
        done = subprocess.run(
            [*argv, "-D", f"{duration:g}", "--log-file", str(requests)], capture_output=True, text=True, check=True
        )
    ok = ok_calls() - before
    seconds = float(re.search(r"finished in ([\d.]+)s", done.stdout).group(1))
    counts = re.search(
        r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, "
        r"(\d+) errored, (\d+) timeout",
        done.stdout,
    )
    answered, succeeded, failed, errored, timeout = (int(x) for x in counts.groups())
    # Lines: start (us since the epoch), HTTP status, duration (us); sorted for the percentiles.
    latencies = sorted(int(line.split()[2]) for line in requests.read_text().splitlines() if line.strip())
    # The server counts a call before its answer leaves, so a call cut off by the end of the run
    # counts there and not here; a call h2load saw answered that the server did not count OK
    # ended with a gRPC error (HTTP 200 and grpc-status in the trailers).
    return {
        "rps": round(min(ok, succeeded) / seconds, 1),
        "p50_ms": latencies[len(latencies) // 2] / 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] / 1000,
        "errors": max(0, succeeded - ok) + (answered - succeeded) + failed + errored + timeout,
        "answered": succeeded,
        "server_ok": ok,
    }


class Meter:
    """Around a measured run: the load generator's CPU (its rusage) and the server's (/proc/<pid>/stat)."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.figures: dict[str, float] = {}

    def _server_cpu(self) -> float:
        fields = Path(f"/proc/{self.server_pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> Meter:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._start = (time.monotonic(), usage.ru_utime + usage.ru_stime, self._server_cpu())
        return self

    def __exit__(self, *exc: object) -> None:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall, generator, server = self._start
        self.figures = {
            "seconds": time.monotonic() - wall,
            "generator_cpu_s": usage.ru_utime + usage.ru_stime - generator,
            "server_cpu_s": self._server_cpu() - server,
        }

    def add_to(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row with the generator's CPU (% of a core) and the server's CPU per answered call."""
        seconds = self.figures["seconds"]
        calls = max(row["rps"] * seconds, 1.0)
        row["generator_cpu_pct"] = round(100 * self.figures["generator_cpu_s"] / seconds, 1)
        row["generator_cpu_ms_per_call"] = round(1000 * self.figures["generator_cpu_s"] / calls, 4)
        row["server_cpu_pct"] = round(100 * self.figures["server_cpu_s"] / seconds, 1)
        row["server_cpu_ms_per_call"] = round(1000 * self.figures["server_cpu_s"] / calls, 4)
        return row


# --- main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per run (after 2 s warm-up)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    ghz = ensure_tools()
    artifact = build_model()
    work = Path(tempfile.mkdtemp(prefix="v2-bench-"))
    info = bodies(work)
    server = OurServer(artifact, work)
    aio = AioVariant(artifact, work)
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        check_answers(server, info, aio)
        url = f"http://127.0.0.1:{server.port}/v2/models/{MODEL}/infer"
        files, c, d = info["files"], args.concurrency, args.duration
        # Each floor's pair runs back to back (binary, json, grpc), so a change in the machine's
        # other load between runs moves both sides of a ratio as little as it can.
        contenders: dict[str, Callable[[Meter], dict[str, Any]]] = {
            "v2-binary": lambda m: run_wrk(url, files["binary"], info["header_length"], c, d, work, m),
            "v2-json": lambda m: run_wrk(url, files["json"], None, c, d, work, m),
            "grpc-raw": lambda m: run_h2load(server.grpc_port, files["grpc-frame"], c, d, work, server.ok_calls, m),
            "grpc-ghz": lambda m: run_ghz(ghz, server.grpc_port, files["grpc"], c, d, m),
            "grpc-aio": lambda m: run_h2load(aio.grpc_port, files["grpc-frame"], c, d, work, aio.ok_calls, m),
        }
        for number in range(1, args.rounds + 1):
            load = round(os.getloadavg()[0], 2)
            result = {}
            for name, run in contenders.items():
                meter = Meter(aio.proc.pid if name == "grpc-aio" else server.proc.pid)
                result[name] = meter.add_to(run(meter))
            for row in result.values():
                row["load1_before_round"] = load
            rounds.append(result)
            log(
                f"round {number} (load {load}): "
                + ", ".join(
                    f"{k} {v['rps']:,.0f} req/s ({v['server_cpu_ms_per_call']:.3f} ms server CPU/call, "
                    f"generator {v['generator_cpu_pct']:.0f}%)"
                    for k, v in result.items()
                )
            )
    finally:
        server.stop()
        aio.stop()

    print(render(rounds, info, args))
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "body_bytes": info["sizes"]}, indent=2))
    return 0 if all(ok for *_, ok in floors(rounds)) else 1


def floors(rounds: list[dict[str, dict[str, Any]]]) -> list[tuple[str, float, float, bool]]:
    out = []
    for fast, slow, needed in FLOORS:
        ratios = [r[fast]["rps"] / r[slow]["rps"] for r in rounds]
        held = sum(ratio >= needed for ratio in ratios)
        out.append((f"{fast} / {slow}", statistics.median(ratios), needed, held == len(rounds)))
    return out


def render(rounds: list[dict[str, dict[str, Any]]], info: dict[str, Any], args: argparse.Namespace) -> str:
    def median(name: str, key: str) -> float:
        return statistics.median(r[name][key] for r in rounds)

    lines = [
        f"| c={args.concurrency} | body bytes | req/s (median of {len(rounds)}) | per round | p50 ms | p99 ms | "
        "errors | server CPU ms/call | generator CPU |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for name in ("v2-json", "v2-binary", "grpc-raw", "grpc-ghz", "grpc-aio"):
        values = sorted(rounds, key=lambda r: r[name]["rps"])
        middle = values[len(values) // 2][name]
        per_round = " / ".join(f"{r[name]['rps']:,.0f}" for r in rounds)
        errors = sum(r[name]["errors"] for r in rounds)
        lines.append(
            f"| {name} | {info['sizes'][name]:,} | {middle['rps']:,.0f} | {per_round} | "
            f"{middle['p50_ms']:.2f} | {middle['p99_ms']:.2f} | {errors} | "
            f"{median(name, 'server_cpu_ms_per_call'):.3f} | {median(name, 'generator_cpu_pct'):.0f}% |"
        )
    lines += ["", "| floor | per round | median | needed | held in every round |", "|---|---|---:|---:|---|"]
    for (fast, slow, _), (label, ratio, needed, ok) in zip(FLOORS, floors(rounds)):
        per_round = ", ".join(f"{r[fast]['rps'] / r[slow]['rps']:.2f}x" for r in rounds)
        lines.append(f"| {label} | {per_round} | {ratio:.2f}x | {needed}x | {'yes' if ok else 'NO'} |")
    loads = [r["v2-json"]["load1_before_round"] for r in rounds]
    lines += [
        "",
        f"Machine: {os.cpu_count()} cores, load average (1 min) before each round: "
        f"{', '.join(f'{x:.2f}' for x in loads)}; wrk -t1, h2load -t1 -c1 -m{args.concurrency}, "
        f"ghz --cpus 1; {args.duration:g} s per run after a 2 s warm-up, rounds interleaved; "
        "CPU columns: medians over the rounds (generator CPU in % of one core).",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

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
  grpc-sync   the same calls to the same handlers on the synchronous grpcio server (16 pool
              threads handing each call to the loop's batcher; benchmarks/grpc_sync_variant.py),
              the alternative to grpc.aio that the server does not use: measured to show why

Load generators, each closed-loop at the same concurrency, one thread / one OS thread so the
generator leaves the server the same CPU in every contender: wrk (-t1, a Lua script that sends
the body and its headers) for HTTP; ghz (Go, ``go install github.com/bojand/ghz/cmd/ghz``,
``--cpus 1``, one HTTP/2 connection as gRPC clients use) for gRPC, with the request serialized
from our own .proto. Rounds are interleaved (json, binary, grpc, json, ...); the floors are
checked in each round and the median round is reported.

Floors (issue: serving front end): v2-binary >= 1.5x v2-json; grpc-raw >= 3x v2-json.
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
    """wrk from Debian, ghz built from its Go module into .tools/bin (both once)."""
    if shutil.which("wrk") is None:
        log("installing wrk (apt-get install -y wrk)")
        subprocess.run(["apt-get", "install", "-y", "-q", "wrk"], check=True, stdout=subprocess.DEVNULL)
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
    subprocess.run([str(PY), "-c", script], check=True, cwd=REPO, capture_output=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class SyncVariant:
    """benchmarks/grpc_sync_variant.py: the same model and handlers on grpcio's thread-pool server."""

    def __init__(self, artifact: Path, logs: Path, threads: int = 16) -> None:
        config = logs / "sync-variant.json"
        config.write_text(json.dumps({
            "model_name": MODEL, "artifact": str(artifact), "host": "127.0.0.1", "port": 1, "grpc_port": 0,
            "threads": 1, "inputs": [{"name": "image", "shape": [32, 32, 3], "dtype": "float32"}],
        }))
        self.proc = subprocess.Popen(
            [str(PY), str(REPO / "benchmarks" / "grpc_sync_variant.py"), str(threads)], cwd=REPO,
            stdout=subprocess.PIPE, stderr=(logs / "sync-variant.log").open("wb"), text=True,
            env={**os.environ, "MODELSTACK_SERVING_CONFIG": str(config), "PYTHONPATH": str(REPO)},
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            raise RuntimeError(f"the sync variant did not start; see {logs / 'sync-variant.log'}")
        self.grpc_port = int(line.split()[1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)


class OurServer:
    """``python -m serving.server`` with HTTP and gRPC on free ports."""

    def __init__(self, artifact: Path, logs: Path) -> None:
        self.port, self.grpc_port = free_port(), free_port()
        config = logs / "serving.json"
        config.write_text(json.dumps({
            "model_name": MODEL, "artifact": str(artifact), "host": "127.0.0.1", "port": self.port,
            "grpc_port": self.grpc_port, "threads": 1,
            "inputs": [{"name": "image", "shape": [32, 32, 3], "dtype": "float32"}],
        }))
        self.log = (logs / "server.log").open("wb")
        self.proc = subprocess.Popen(
            [str(PY), "-m", "serving.server"], cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT,
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
    header = json.dumps({
        "inputs": [{**tensor, "parameters": {"binary_data_size": len(raw)}}],
        "parameters": {"binary_data_output": True},
    }).encode()
    message = pb.ModelInferRequest(
        model_name=MODEL,
        inputs=[pb.ModelInferRequest.InferInputTensor(name="image", datatype="FP32", shape=[1, 32, 32, 3])],
        raw_input_contents=[raw],
    )
    files = {"json": work / "v2.json", "binary": work / "v2.bin", "grpc": work / "infer.pb"}
    files["json"].write_bytes(json_body)
    files["binary"].write_bytes(header + raw)
    files["grpc"].write_bytes(message.SerializeToString())
    return {"files": files, "header_length": len(header), "sizes": {
        "v2-json": len(json_body), "v2-binary": len(header) + len(raw), "grpc-raw": len(files["grpc"].read_bytes()),
        "grpc-sync": len(files["grpc"].read_bytes()),
    }}


def check_answers(server: OurServer, info: dict[str, Any]) -> None:
    """Each form gets a 200 / OK with the same output before anything is measured."""
    import numpy as np

    sys.path.insert(0, str(REPO))
    import grpc

    from serving.proto import grpc_service_pb2 as pb
    from serving.proto import grpc_service_pb2_grpc as pb_grpc

    url = f"http://127.0.0.1:{server.port}/v2/models/{MODEL}/infer"
    with urllib.request.urlopen(urllib.request.Request(url, data=info["files"]["json"].read_bytes()), timeout=10) as r:
        from_json = np.array(json.loads(r.read())["outputs"][0]["data"], dtype=np.float32)
    request = urllib.request.Request(url, data=info["files"]["binary"].read_bytes(), headers={
        "Content-Type": "application/octet-stream", "Inference-Header-Content-Length": str(info["header_length"])})
    with urllib.request.urlopen(request, timeout=10) as r:
        length = int(r.headers["Inference-Header-Content-Length"])
        from_binary = np.frombuffer(r.read()[length:], dtype="<f4")
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            pb.ModelInferRequest.FromString(info["files"]["grpc"].read_bytes()))
        from_grpc = np.frombuffer(answer.raw_output_contents[0], dtype="<f4")
    np.testing.assert_allclose(from_binary, from_json, rtol=1e-6)
    np.testing.assert_allclose(from_grpc, from_json, rtol=1e-6)


WRK_SCRIPT = '''
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
'''


def run_wrk(url: str, body: Path, header_length: int | None, concurrency: int, duration: float,
            work: Path) -> dict[str, Any]:
    script = work / "v2.lua"
    script.write_text(WRK_SCRIPT)
    env = {
        **os.environ, "BENCH_BODY": str(body),
        "BENCH_CONTENT_TYPE": "application/json" if header_length is None else "application/octet-stream",
        "BENCH_HEADER_LENGTH": "" if header_length is None else str(header_length),
    }
    argv = ["wrk", "-t1", "-c", str(concurrency), "--timeout", "10s", "-s", str(script), url]
    subprocess.run([*argv[:1], *argv[1:], "-d", "2s"], env=env, capture_output=True, check=True)  # warm-up
    done = subprocess.run([*argv, "-d", f"{duration:g}s"], env=env, capture_output=True, text=True, check=True)
    raw = json.loads(next(l for l in done.stdout.splitlines() if l.startswith("RESULT "))[7:])
    seconds = raw["duration_us"] / 1e6
    errors = raw["non2xx"] + raw["connect"] + raw["read"] + raw["write"] + raw["timeout"]
    return {"rps": round((raw["requests"] - raw["non2xx"]) / seconds, 1), "p50_ms": raw["p50"] / 1000,
            "p99_ms": raw["p99"] / 1000, "errors": errors}


def run_ghz(ghz: str, port: int, message: Path, concurrency: int, duration: float) -> dict[str, Any]:
    argv = [
        ghz, "--insecure", "--proto", str(REPO / "serving" / "proto" / "grpc_service.proto"),
        "--import-paths", str(REPO), "--call", "inference.GRPCInferenceService.ModelInfer",
        "--binary-file", str(message), "-c", str(concurrency), "--connections", "1", "--cpus", "1",
        "--format", "json", f"127.0.0.1:{port}",
    ]
    subprocess.run([*argv, "-z", "2s"], capture_output=True, check=True)  # warm-up
    done = subprocess.run([*argv, "-z", f"{duration:g}s"], capture_output=True, text=True, check=True)
    report = json.loads(done.stdout)
    ok = report.get("statusCodeDistribution", {}).get("OK", 0)
    # ghz ends a timed run by closing its connection: the calls in flight then (at most one per
    # worker) fail with "transport is closing" on the client's side; they are not server errors.
    cut = sum(n for message, n in (report.get("errorDistribution") or {}).items() if "transport is closing" in message)
    latencies = {d["percentage"]: d["latency"] for d in report.get("latencyDistribution") or []}
    return {"rps": round(ok / (report["total"] / 1e9), 1), "p50_ms": latencies.get(50, 0) / 1e6,
            "p99_ms": latencies.get(99, 0) / 1e6, "errors": report["count"] - ok - min(cut, concurrency),
            "cut_at_end": cut}


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
    sync = SyncVariant(artifact, work)
    rounds: list[dict[str, dict[str, Any]]] = []
    try:
        check_answers(server, info)
        url = f"http://127.0.0.1:{server.port}/v2/models/{MODEL}/infer"
        for number in range(1, args.rounds + 1):
            load = round(os.getloadavg()[0], 2)
            result = {
                "v2-json": run_wrk(url, info["files"]["json"], None, args.concurrency, args.duration, work),
                "v2-binary": run_wrk(url, info["files"]["binary"], info["header_length"], args.concurrency,
                                     args.duration, work),
                "grpc-raw": run_ghz(ghz, server.grpc_port, info["files"]["grpc"], args.concurrency, args.duration),
                "grpc-sync": run_ghz(ghz, sync.grpc_port, info["files"]["grpc"], args.concurrency, args.duration),
            }
            for row in result.values():
                row["load1_before_round"] = load
            rounds.append(result)
            log(f"round {number}: " + ", ".join(f"{k} {v['rps']:,.0f} req/s" for k, v in result.items()))
    finally:
        server.stop()
        sync.stop()

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
    lines = [
        f"| c={args.concurrency} | body bytes | req/s (median of {len(rounds)}) | per round | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for name in ("v2-json", "v2-binary", "grpc-raw", "grpc-sync"):
        values = sorted(rounds, key=lambda r: r[name]["rps"])
        middle = values[len(values) // 2][name]
        per_round = " / ".join(f"{r[name]['rps']:,.0f}" for r in rounds)
        errors = sum(r[name]["errors"] for r in rounds)
        lines.append(f"| {name} | {info['sizes'][name]:,} | {middle['rps']:,.0f} | {per_round} | "
                     f"{middle['p50_ms']:.2f} | {middle['p99_ms']:.2f} | {errors} |")
    lines += ["", "| floor | median ratio | needed | held in every round |", "|---|---:|---:|---|"]
    for label, ratio, needed, ok in floors(rounds):
        lines.append(f"| {label} | {ratio:.2f}x | {needed}x | {'yes' if ok else 'NO'} |")
    loads = [r["v2-json"]["load1_before_round"] for r in rounds]
    lines += ["", f"Machine: {os.cpu_count()} cores, load average (1 min) before each round: "
                  f"{', '.join(f'{x:.2f}' for x in loads)}; wrk -t1 and ghz --cpus 1, {args.duration:g} s per run "
                  "after a 2 s warm-up, rounds interleaved."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

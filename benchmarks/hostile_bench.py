"""Hostile clients against one server: every attack class of issue 19, each beside a client that reads.

    .venv/bin/python benchmarks/hostile_bench.py [--attack-s 6] [--only NAME ...] [--json out.json]

One ``python -m serving.server`` with the spec's defaults (max_connections 1024, max_body_bytes
4 MiB, max_buffered_bytes 64 MiB, request_timeout_s 30, idle_timeout_s 75; HTTP and gRPC on)
serves a digits-shaped model built here (64 float32 inputs, a dense layer and a 10-way
softmax, ONNX Runtime). For each attack class, in turn:

  1. the server's RSS (baseline) and a well-behaved client's quiet p99, measured alone: it
     alternates a V2 JSON infer over HTTP/1.1 and a ModelInfer over gRPC, one at a time;
  2. the attack runs for ``--attack-s`` seconds beside that client, RSS sampled every 50 ms;
  3. the attack's clients go away; 3 s later the RSS is read again.

Floors, per attack: peak RSS <= 70% of 512 MiB (the replica's memory limit); the client beside
it keeps 100% success and a p99 within 10x its quiet p99; RSS after within 20% of the baseline;
the log (the server's stderr, to a file) grows by at most 1 MB/s during the attack.

Attacks (the issue's finding numbers; 5, 6, 7 and 9 are the request decoding's, fixed beside):

  grpc-window0-echo (1)   2 connections with flow-control window 0, 100 ModelInfer each whose
                          3.9 MB id is echoed in the answer
  http-declared (2)       16 POSTs declaring Content-Length 4194304 and sending no body
  grpc-headers-only (3)   11 connections x 100 streams that send headers and no message
  http-non-reader (4)     10 clients asking for 3.9 MB answers (V2 id echo), one more request
                          pipelined, never reading
  json-true (5)           3 connections sending 4.9 MB/s of V2 bodies ending in ``true``
  fp16-inf (6)            binary-extension and gRPC FP16 inputs holding +-Inf
  huge-int (7)            a 5,000-digit Inference-Header-Content-Length; shape [10**4299, 64]
  log-flood (8)           64 KiB request targets from one connection at ~4 MB/s
  grpc-echo-name (9)      ModelInfer with a 3.9 MB model name of NUL bytes
  grpc-resets (10)        calls reset by their client right after sending (a 1 ms deadline)
  grpc-mistakes (11)      calls without a message, with a bad compressed flag, JSON content type
  padded-head (12)        130 KB request heads padded with spaces
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402 (after the repository is on sys.path)
import numpy as np  # noqa: E402 (after the repository is on sys.path)
from h2.config import H2Configuration  # noqa: E402 (after the repository is on sys.path)
from h2.connection import H2Connection  # noqa: E402 (after the repository is on sys.path)
from h2.settings import SettingCodes  # noqa: E402 (after the repository is on sys.path)

from serving.proto import grpc_service_pb2 as pb  # noqa: E402 (after the repository is on sys.path)
from serving.proto import grpc_service_pb2_grpc as pb_grpc  # noqa: E402 (after the repository is on sys.path)

MODEL = "digits"
LIMIT_MIB = 512
INFER = "/inference.GRPCInferenceService/ModelInfer"
SAMPLE = np.random.default_rng(0).random((1, 64), dtype=np.float32)
BIG_ID = 3_900_000


# -- the server --------------------------------------------------------------------------------------


def build_model(folder: Path) -> Path:
    """A digits-shaped model: 64 float32 inputs -> dense -> 10-way softmax, as an .onnx file."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["pixels", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        MODEL,
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", 10])],
        initializer=[
            numpy_helper.from_array(rng.normal(size=(64, 10)).astype(np.float32), "W"),
            numpy_helper.from_array(np.zeros(10, np.float32), "B"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = folder / "digits.onnx"
    onnx.save(model, str(path))
    return path


class Server:
    def __init__(self, folder: Path) -> None:
        config = {
            "model_name": MODEL,
            "artifact": str(build_model(folder)),
            "host": "127.0.0.1",
            "port": 0,
            "grpc_port": 0,
            "threads": 1,
            "inputs": [{"name": "pixels", "shape": [64], "dtype": "float32"}],
        }
        (folder / "serving.json").write_text(json.dumps(config))
        self.log = folder / "server.log"
        env = {
            **os.environ,
            "MODELSTACK_SERVING_CONFIG": str(folder / "serving.json"),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")])),
        }
        self._log_file = self.log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving.server"],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self._log_file,
        )
        self.port = self.grpc_port = 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in self.log.read_text(errors="replace").splitlines():
                if '"listening"' in line:
                    record = json.loads(line)
                    self.port, self.grpc_port = record["port"], record["grpc_port"]
                if '"ready"' in line and self.port:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the server did not start:\n{self.log.read_text()}")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def log_bytes(self) -> int:
        return self.log.stat().st_size

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self._log_file.close()


# -- the well-behaved client ---------------------------------------------------------------------------


def _http_infer_body(**extra: Any) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": SAMPLE.ravel().tolist()}], **extra}
    ).encode()


def _post(path: str, body: bytes, headers: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n{headers}\r\n").encode() + body


class GoodClient:
    """Alternates a V2 JSON infer (HTTP/1.1, keep-alive) and a ModelInfer (gRPC); times each."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.request = _post(f"/v2/models/{MODEL}/infer", _http_infer_body())
        self.message = pb.ModelInferRequest(
            model_name=MODEL,
            inputs=[pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=[1, 64])],
            raw_input_contents=[SAMPLE.tobytes()],
        )

    def run(self, seconds: float) -> tuple[int, int, list[float]]:
        """(calls, failures, latencies in seconds) over ``seconds``."""
        calls = failures = 0
        latencies: list[float] = []
        sock: socket.socket | None = None
        channel = grpc.insecure_channel(f"127.0.0.1:{self.server.grpc_port}")
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for kind in ("http", "grpc"):
                calls += 1
                started = time.perf_counter()
                try:
                    if kind == "http":
                        if sock is None:
                            sock = socket.create_connection(("127.0.0.1", self.server.port), timeout=10)
                        ok = _http_exchange(sock, self.request) == 200
                    else:
                        ok = len(stub.ModelInfer(self.message, timeout=10).raw_output_contents) == 1
                except (OSError, grpc.RpcError, ValueError):
                    ok = False
                    if sock is not None:
                        sock.close()
                        sock = None
                latencies.append(time.perf_counter() - started)
                failures += not ok
        if sock is not None:
            sock.close()
        channel.close()
        return calls, failures, latencies


def _http_exchange(sock: socket.socket, request: bytes) -> int:
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    return int(head.split(b" ", 2)[1])


# -- attacks: each runs until ``stop`` is set, then lets go of everything it holds ---------------------


def _h2(port: int, window: int | None = None) -> tuple[socket.socket, H2Connection]:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    conn = H2Connection(H2Configuration(client_side=True, header_encoding="utf-8"))
    conn.initiate_connection()
    if window is not None:
        conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: window})
    sock.sendall(conn.data_to_send())
    return sock, conn


def _h2_call(
    sock: socket.socket,
    conn: H2Connection,
    message: bytes | None,
    path: str = INFER,
    content_type: str = "application/grpc",
    flag: int = 0,
    end: bool = True,
    stop: threading.Event | None = None,
) -> int:
    """Start one call on ``conn``; the message in frames its windows allow (reading the server's
    frames meanwhile, so its WINDOW_UPDATEs arrive)."""
    stream = conn.get_next_available_stream_id()
    conn.send_headers(
        stream,
        [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", "127.0.0.1"),
            ("content-type", content_type),
            ("te", "trailers"),
        ],
        end_stream=message is None and end,
    )
    if message is not None:
        data = memoryview(bytes([flag]) + struct.pack(">I", len(message)) + message)
        while data:
            room = min(conn.local_flow_control_window(stream), conn.max_outbound_frame_size)
            if room == 0:
                if stop is not None and stop.is_set():
                    raise OSError("the attack is over")
                sock.sendall(conn.data_to_send())
                _h2_read(sock, conn, 0.2)
                continue
            conn.send_data(stream, data[:room].tobytes())
            data = data[room:]
        if end:
            conn.end_stream(stream)
    sock.sendall(conn.data_to_send())
    return stream


def _h2_read(sock: socket.socket, conn: H2Connection, timeout: float) -> bool:
    """Handle what the server sent within ``timeout`` (without acknowledging answers' data); False
    once the server has closed the connection."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(1 << 20)
    except TimeoutError:
        return True
    except OSError:
        return False
    if not data:
        return False
    try:
        conn.receive_data(data)
        sock.sendall(conn.data_to_send())
    except Exception:  # noqa: BLE001 - the server ended the connection (GOAWAY): the attack reconnects
        return False
    return True


def _infer_message(**fields: Any) -> bytes:
    return pb.ModelInferRequest(
        **{
            "model_name": MODEL,
            "raw_input_contents": [SAMPLE.tobytes()],
            "inputs": [pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP32", shape=[1, 64])],
            **fields,
        }
    ).SerializeToString()


def grpc_window0_echo(server: Ports, stop: threading.Event) -> None:
    message = _infer_message(id="i" * BIG_ID)

    def one() -> None:
        sock, conn = _h2(server.grpc_port, window=0)
        try:
            for _ in range(100):
                if stop.is_set():
                    break
                _h2_call(sock, conn, message, stop=stop)
            while not stop.is_set() and _h2_read(sock, conn, 0.2):
                pass
        except Exception:  # noqa: BLE001, S110 - the server refused or reset it: the attack is done
            pass
        finally:
            sock.close()

    _in_threads([one, one], stop)


def http_declared(server: Ports, stop: threading.Event) -> None:
    head = f"POST /v2/models/{MODEL}/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 4194304\r\n\r\n".encode()
    socks = []
    for _ in range(16):
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(head)
        socks.append(sock)
    stop.wait()
    for sock in socks:
        sock.close()


def grpc_headers_only(server: Ports, stop: threading.Event) -> None:
    held = []
    for _ in range(11):
        sock, conn = _h2(server.grpc_port)
        for _ in range(100):
            _h2_call(sock, conn, None, end=False)
        held.append((sock, conn))
    while not stop.is_set():
        for sock, conn in held:
            _h2_read(sock, conn, 0.05)
    for sock, _ in held:
        sock.close()


def http_non_reader(server: Ports, stop: threading.Event) -> None:
    request = _post(f"/v2/models/{MODEL}/infer", _http_infer_body(id="i" * BIG_ID))
    socks = []
    for _ in range(10):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.setblocking(False)
        socks.append((sock, memoryview(request * 2)))
    while not stop.is_set():  # send without ever reading, as the socket takes it
        for i, (sock, rest) in enumerate(socks):
            try:
                sent = sock.send(rest) if rest else 0
                socks[i] = (sock, rest[sent:])
            except (BlockingIOError, OSError):
                pass
        time.sleep(0.05)
    for sock, _ in socks:
        sock.close()


def _paced(
    server_port: int, requests: Callable[[], bytes], bytes_per_s: float, stop: threading.Event, read: bool = True
) -> None:
    """Send requests at about ``bytes_per_s`` on a keep-alive connection, reading the answers."""
    sock: socket.socket | None = None
    while not stop.is_set():
        started = time.monotonic()
        request = requests()
        try:
            if sock is None:
                sock = socket.create_connection(("127.0.0.1", server_port), timeout=10)
            _http_exchange(sock, request)
        except (OSError, ValueError):
            if sock is not None:
                sock.close()
            sock = None
        time.sleep(max(0.0, len(request) / bytes_per_s - (time.monotonic() - started)))
    if sock is not None:
        sock.close()


def json_true(server: Ports, stop: threading.Event) -> None:
    body = _http_infer_body()
    filler = b'{"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": [' + b"1.5, " * 780_000
    bad = _post(f"/v2/models/{MODEL}/infer", filler + b"true]}]}")
    assert len(bad) < 4 * 1024 * 1024 and body
    _in_threads([lambda: _paced(server.port, lambda: bad, 4.9e6 / 3, stop)] * 3, stop)


def fp16_inf(server: Ports, stop: threading.Event) -> None:
    raw = np.full((1, 64), np.inf, dtype=np.float16).tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "pixels", "shape": [1, 64], "datatype": "FP16", "parameters": {"binary_data_size": len(raw)}}
            ]
        }
    ).encode()
    request = _post(f"/v2/models/{MODEL}/infer", header + raw, f"Inference-Header-Content-Length: {len(header)}\r\n")
    message = pb.ModelInferRequest(
        model_name=MODEL,
        raw_input_contents=[raw],
        inputs=[pb.ModelInferRequest.InferInputTensor(name="pixels", datatype="FP16", shape=[1, 64])],
    )

    def grpc_loop() -> None:
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    stub.ModelInfer(message, timeout=5)
                except grpc.RpcError:
                    pass

    _in_threads([lambda: _paced(server.port, lambda: request, 2e5, stop), grpc_loop], stop)


def huge_int(server: Ports, stop: threading.Event) -> None:
    body = _http_infer_body()
    digits = _post(f"/v2/models/{MODEL}/infer", body, f"Inference-Header-Content-Length: {'9' * 5000}\r\n")
    shape = (
        '{"inputs": [{"name": "pixels", "shape": [' + "9" * 4300 + ', 64], "datatype": "FP32", "data": [1.0]}]}'
    ).encode()
    requests = [digits, _post(f"/v2/models/{MODEL}/infer", shape)]
    turn = iter(range(1 << 62))
    _paced(server.port, lambda: requests[next(turn) % 2], 2e5, stop)


def log_flood(server: Ports, stop: threading.Event) -> None:
    request = f"GET /healthz?{'x' * 65_000} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    _paced(server.port, lambda: request, 4e6, stop)


def grpc_echo_name(server: Ports, stop: threading.Event) -> None:
    message = pb.ModelInferRequest(model_name="\x00" * BIG_ID)
    with grpc.insecure_channel(
        f"127.0.0.1:{server.grpc_port}",
        options=[("grpc.max_receive_message_length", -1), ("grpc.max_metadata_size", 64 * 1024 * 1024)],
    ) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        while not stop.is_set():
            try:
                stub.ModelInfer(message, timeout=5)
            except grpc.RpcError:
                pass
            time.sleep(0.5)  # ~8 MB/s of requests


def grpc_resets(server: Ports, stop: threading.Event) -> None:
    message = _infer_message()
    while not stop.is_set():
        sock, conn = _h2(server.grpc_port)
        try:
            for _ in range(200):
                stream = _h2_call(sock, conn, message)
                conn.reset_stream(stream)
            sock.sendall(conn.data_to_send())
            _h2_read(sock, conn, 0.1)
        except Exception:  # noqa: BLE001, S112 - a connection the server ended: start another
            continue
        finally:
            sock.close()


def grpc_mistakes(server: Ports, stop: threading.Event) -> None:
    message = _infer_message()
    while not stop.is_set():
        sock, conn = _h2(server.grpc_port)
        try:
            for _ in range(20):
                _h2_call(sock, conn, None)
                _h2_call(sock, conn, message, flag=1)
                _h2_call(sock, conn, message, flag=7)
                _h2_call(sock, conn, message, content_type="application/json")
            _h2_read(sock, conn, 0.1)
            sock.shutdown(socket.SHUT_WR)
            _h2_read(sock, conn, 0.1)
        except Exception:  # noqa: BLE001, S112 - a connection the server ended: start another
            continue
        finally:
            sock.close()


def padded_head(server: Ports, stop: threading.Event) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b" " * 130_000 + b"v\r\n\r\n"

    def once() -> bytes:
        return request

    _paced(server.port, once, 2e6, stop)


ATTACKS: dict[str, Callable[[Server, threading.Event], None]] = {
    "grpc-window0-echo": grpc_window0_echo,
    "http-declared": http_declared,
    "grpc-headers-only": grpc_headers_only,
    "http-non-reader": http_non_reader,
    "json-true": json_true,
    "fp16-inf": fp16_inf,
    "huge-int": huge_int,
    "log-flood": log_flood,
    "grpc-echo-name": grpc_echo_name,
    "grpc-resets": grpc_resets,
    "grpc-mistakes": grpc_mistakes,
    "padded-head": padded_head,
}


def _in_threads(targets: list[Callable[[], None]], stop: threading.Event) -> None:
    threads = [threading.Thread(target=target, daemon=True) for target in targets]
    for thread in threads:
        thread.start()
    stop.wait()
    for thread in threads:
        thread.join(timeout=10)


# -- one attack, measured -----------------------------------------------------------------------------


class Ports(NamedTuple):
    """Where an attack aims: the server's HTTP and gRPC ports."""

    port: int
    grpc_port: int


def _attack(name: str, ports: Ports, stop: Any, started: Any) -> None:
    """One attack in a process of its own: in the measuring process its Python (h2 framing, sockets)
    would hold the GIL the client beside it needs, and that client's p99 would measure the benchmark."""
    started.set()
    ATTACKS[name](ports, stop)


def measure(server: Server, name: str, attack_s: float) -> dict[str, Any]:
    good = GoodClient(server)
    good.run(1.0)  # warm
    time.sleep(0.5)
    baseline = server.rss_mib()
    _, quiet_failures, quiet = good.run(3.0)
    quiet_p99 = float(np.percentile(quiet, 99))
    processes = multiprocessing.get_context("spawn")
    stop, started = processes.Event(), processes.Event()
    attacker = processes.Process(
        target=_attack, args=(name, Ports(server.port, server.grpc_port), stop, started), daemon=True
    )
    peak = [baseline]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], server.rss_mib())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    attacker.start()
    started.wait(60)
    log_before = server.log_bytes()
    sampler.start()
    time.sleep(0.5)  # the attack in place before the client beside it is measured
    calls, failures, latencies = good.run(attack_s)
    log_rate = (server.log_bytes() - log_before) / (attack_s + 0.5)
    stop.set()
    attacker.join(timeout=15)
    if attacker.is_alive():
        attacker.kill()
    sampler.join()
    time.sleep(3.0)
    after = server.rss_mib()
    p99 = float(np.percentile(latencies, 99))
    result = {
        "attack": name,
        "baseline_mib": round(baseline, 1),
        "peak_mib": round(peak[0], 1),
        "after_mib": round(after, 1),
        "calls": calls,
        "failures": failures,
        "quiet_failures": quiet_failures,
        "quiet_p99_ms": round(quiet_p99 * 1000, 2),
        "p99_ms": round(p99 * 1000, 2),
        "p50_ms": round(statistics.median(latencies) * 1000, 2),
        "log_mb_s": round(log_rate / 1e6, 3),
    }
    result["holds"] = {
        "rss": peak[0] <= 0.7 * LIMIT_MIB,
        "success": failures == 0,
        "p99": p99 <= 10 * quiet_p99,
        "memory_back": after <= 1.2 * baseline,
        "log_rate": log_rate <= 1e6,
    }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--attack-s", type=float, default=6.0)
    parser.add_argument("--only", nargs="*", choices=sorted(ATTACKS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="hostile-bench-") as folder:
        for name in args.only or list(ATTACKS):
            server = Server(Path(folder) / name if Path(folder, name).mkdir() is None else Path(folder))
            try:
                result = measure(server, name, args.attack_s)
            finally:
                server.stop()
            results.append(result)
            holds = result["holds"]
            print(
                f"{name:18} rss {result['baseline_mib']:6.1f} -> peak {result['peak_mib']:6.1f} -> "
                f"{result['after_mib']:6.1f} MiB | beside: {result['calls'] - result['failures']}/{result['calls']} ok, "
                f"p99 {result['p99_ms']:7.2f} ms (quiet {result['quiet_p99_ms']:.2f}) | log "
                f"{result['log_mb_s']:.3f} MB/s | {'ok' if all(holds.values()) else 'FAILS ' + ','.join(k for k, v in holds.items() if not v)}",
                flush=True,
            )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "load": os.getloadavg(), "results": results},
                indent=2,
            )
        )
    return 0 if all(all(r["holds"].values()) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""gRPC through the Docker target's proxy with the real Pulumi engine and Docker Engine: the standard
clients through nginx, and zero failed gRPC calls while rollouts replace every replica."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from harness.processes import free_port
from harness.sandbox import Sandbox
from iac.loadgen import ThreadedLoad

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.pulumi, pytest.mark.tf, pytest.mark.timeout(1200)]
VARIANTS = {"int8": "litert-int8", "dynamic": "litert-dynamic"}


@pytest.fixture(scope="module")
def stack(digits_example: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """The digits stack with 2 replicas and gRPC published on a free host port."""
    stack = Sandbox(tmp_path_factory.mktemp("grpc-rollout"), digits_example)
    grpc_port = free_port()
    stack.edit_spec(f"  host_port: {stack.port}\n", f"  host_port: {stack.port}\n  grpc_host_port: {grpc_port}\n")
    with stack.deployed():
        yield stack


@pytest.fixture(scope="module")
def sample(digits_example: Path) -> np.ndarray:
    with np.load(digits_example / "data" / "evaluation.npz") as data:
        return data["x"][:1].astype(np.float32)


class GrpcLoad(ThreadedLoad):
    """Threads calling ModelInfer through the proxy with tritonclient.grpc, each with its own channel,
    until the block ends (or ``limit_s`` passes); every failed call is kept."""

    join_timeout = 60.0

    def __init__(self, target: str, sample: np.ndarray, threads: int = 4, limit_s: float = 600.0) -> None:
        super().__init__(threads)
        self.target, self.sample, self.limit_s = target, sample, limit_s
        self.ok = 0
        self.failures: list[str] = []

    def _loop(self) -> None:
        client = grpcclient.InferenceServerClient(self.target)
        inputs = [grpcclient.InferInput("pixels", list(self.sample.shape), "FP32")]
        inputs[0].set_data_from_numpy(self.sample)
        deadline = time.monotonic() + self.limit_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                output = client.infer("digits", inputs, client_timeout=30).as_numpy("output_0")
                assert output.shape == (1, 10), output.shape
                with self._lock:
                    self.ok += 1
            except Exception as exc:  # noqa: BLE001 - every failure is the test's finding
                with self._lock:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.005)  # paced: a steady stream of calls, not a saturating one
        client.close()


def _grpc_target(stack: Sandbox) -> str:
    return stack.outputs()["grpc_target"]


def test_standard_clients_through_the_proxy(stack: Sandbox, sample: np.ndarray) -> None:
    grpc = grpcclient.InferenceServerClient(_grpc_target(stack))
    assert grpc.is_server_ready() and grpc.is_model_ready("digits")
    inputs = [grpcclient.InferInput("pixels", [1, 64], "FP32")]
    inputs[0].set_data_from_numpy(sample)
    from_grpc = grpc.infer("digits", inputs).as_numpy("output_0")

    http = httpclient.InferenceServerClient(stack.base_url.removeprefix("http://"))
    inputs = [httpclient.InferInput("pixels", [1, 64], "FP32")]
    inputs[0].set_data_from_numpy(sample)  # binary tensor data through nginx
    from_http = http.infer("digits", inputs).as_numpy("output_0")
    np.testing.assert_allclose(from_grpc, from_http, rtol=1e-6)


def test_rollouts_under_grpc_load_fail_no_call(stack: Sandbox, sample: np.ndarray) -> None:
    durations = []
    with GrpcLoad(_grpc_target(stack), sample) as load:
        time.sleep(1)
        for _ in range(2):
            old = "int8" if "quantization: int8" in (stack.dir / "model.yaml").read_text() else "dynamic"
            new = "dynamic" if old == "int8" else "int8"
            stack.edit_spec(f"quantization: {old}", f"quantization: {new}")
            started = time.monotonic()
            stack.pulumi("up", "--yes", "--skip-preview")
            durations.append(time.monotonic() - started)
            assert stack.metadata()["variant"] == VARIANTS[new]
        time.sleep(1)
    print(f"rollouts: {[round(d, 1) for d in durations]} s; {load.ok} gRPC calls served")
    assert load.failures == [], load.failures[:5]
    assert load.ok > 100

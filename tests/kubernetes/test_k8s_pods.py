"""The Kubernetes target with real pods (a kubelet on this host, cri-dockerd, a bridge CNI, kube-proxy):
digits deployed and answering through its Service (HTTP and gRPC), a model change rolled under load with no failed
request, a version that never gets ready never taking traffic, `modelstack status` and `diff`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
from specs import kubernetes_deploy

pytestmark = [pytest.mark.k8s, pytest.mark.pulumi, pytest.mark.docker, pytest.mark.e2e]

NAMESPACE = "models"
VARIANTS = {"int8": "litert-int8", "dynamic": "litert-dynamic"}
SMALL = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}


@pytest.fixture(scope="module")
def stack(real_node: object, digits_example: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from harness.k8s.sandbox import K8sSandbox

    deploy = kubernetes_deploy(
        real_node.registry,
        real_node.kubeconfig,
        NAMESPACE,
        replicas=2,
        resources=SMALL,
        progress_deadline=90,
        startup_timeout=60,
    )
    with K8sSandbox(tmp_path_factory.mktemp("pods-stack"), digits_example, deploy).deployed() as stack:
        yield stack


@pytest.fixture(scope="module")
def body(digits_example: Path) -> dict:
    with np.load(digits_example / "data" / "evaluation.npz") as data:
        return {"instances": [data["x"][0].tolist()]}


def _spec(stack: object):
    from iac.spec.load import load_resolved

    return load_resolved(stack.spec_path)


def _endpoint(stack: object) -> str:
    from iac.deploy.targets.kubernetes.settings import endpoint

    return endpoint(_spec(stack))


def _served(stack: object) -> dict:
    from harness.sandbox import get
    from iac.deploy.targets.kubernetes.settings import base_url

    return get(f"{base_url(_spec(stack))}/v1/models/digits/metadata")["metadata"]["modelstack"]


def _settled(stack: object, wanted: str, key: str = "variant", timeout: float = 60.0) -> dict:
    """What the Service serves once kube-proxy has caught up: old pods keep answering through their preStop
    delay until their endpoints leave the iptables rules, so a rollout's end is read as several replies in a
    row from the new version, not as one reply."""
    deadline, in_a_row, served = time.monotonic() + timeout, 0, {}
    while time.monotonic() < deadline:
        served = _served(stack)
        in_a_row = in_a_row + 1 if served[key] == wanted else 0
        if in_a_row == 8:
            return served
        time.sleep(0.25)
    raise AssertionError(
        f"the Service still serves {key}={served.get(key)!r}, not {wanted!r}, {timeout:.0f} s after up"
    )


def _rolled_out_problem(stack: object) -> str:
    from iac.deploy.targets.kubernetes.rolled_out import wait_rolled_out
    from iac.deploy.targets.kubernetes.settings import cluster_access

    spec = _spec(stack)
    return wait_rolled_out({**cluster_access(spec), "name": spec.name, "timeout_s": 5})


def _switch(stack: object) -> str:
    optimize = stack.spec()["optimize"]
    new = "dynamic" if optimize["quantization"] == "int8" else "int8"
    stack.write_spec(optimize={**optimize, "quantization": new})
    return new


def test_digits_answers_through_the_service(stack: object, body: dict) -> None:
    from harness.sandbox import post

    url = _endpoint(stack)
    assert url.startswith("http://10.96."), url  # the Service's cluster IP, routed by kube-proxy
    scores = post(url, body)["predictions"][0]
    assert len(scores) == 10 and abs(sum(scores) - 1) < 0.02  # int8 outputs are quantized
    assert _served(stack)["variant"] == VARIANTS[stack.spec()["optimize"]["quantization"]]


def test_grpc_answers_through_the_service(stack: object, body: dict) -> None:
    """tritonclient.grpc, in its defaults, on the Service's gRPC port (cluster IP, kube-proxy): the same
    scores as the HTTP route."""
    import tritonclient.grpc as grpcclient

    from harness.sandbox import post

    host = urlsplit(_endpoint(stack)).hostname
    client = grpcclient.InferenceServerClient(f"{host}:{_spec(stack).spec.serving.grpc_port}")
    try:
        assert client.is_server_ready() and client.is_model_ready("digits")
        sample = np.asarray(body["instances"], dtype=np.float32)
        inputs = [grpcclient.InferInput("pixels", list(sample.shape), "FP32")]
        inputs[0].set_data_from_numpy(sample)
        scores = client.infer("digits", inputs).as_numpy("output_0")
    finally:
        client.close()
    np.testing.assert_allclose(scores, post(_endpoint(stack), body)["predictions"], rtol=1e-6, atol=1e-6)


def test_model_change_rolls_under_load_with_no_failed_request(stack: object, body: dict) -> None:
    from iac.loadgen import PacedLoad

    with PacedLoad(_endpoint(stack), body, concurrency=4, rate=20) as load:
        new = _switch(stack)
        started = time.monotonic()
        stack.up()
        took = time.monotonic() - started
        _settled(stack, VARIANTS[new])
    print(f"rollout under load: {took:.1f} s; {load.result.ok} requests served, {len(load.result.failures)} failed")
    assert load.result.failures == []
    assert load.result.ok > 50


def test_a_version_that_never_gets_ready_never_takes_traffic(stack: object, body: dict) -> None:
    from iac.loadgen import PacedLoad

    serving = _served(stack)["artifact_sha256"]
    new = _switch(stack)
    tiny = {"requests": {"cpu": "100m", "memory": "16Mi"}, "limits": {"cpu": "1", "memory": "16Mi"}}
    stack.edit_kubernetes(resources=tiny)  # the server cannot load its runtime in 16 MiB
    try:
        with PacedLoad(_endpoint(stack), body, concurrency=4, rate=20) as load:
            started = time.monotonic()
            run = stack.run("up", "--yes", "--skip-preview", "--suppress-progress", check=False)
            took = time.monotonic() - started
        assert run.returncode != 0, run.stdout[-3000:]
        assert load.result.failures == []
        assert _served(stack)["artifact_sha256"] == serving
        # The check `up` runs after the provider's own await reads the same stuck Deployment and names why.
        problem = _rolled_out_problem(stack)
        print(problem)
        assert "did not get ready" in problem and "restarts" in problem, problem
    finally:
        stack.edit_kubernetes(resources=SMALL)
    print(f"never-ready rollout failed after {took:.1f} s; {load.result.ok} requests served meanwhile")
    stack.up()  # the next up with a good spec converges
    assert _settled(stack, VARIANTS[new])["artifact_sha256"] != serving


def test_status_and_model_diff(stack: object) -> None:
    env = {**os.environ, "PULUMI_CONFIG_PASSPHRASE": "modelstack-sandbox"}
    cli = [sys.executable, "-m", "iac.cli.app"]
    status = subprocess.run(
        [*cli, "status", str(stack.spec_path), "--stack", stack.name],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert "2/2 ready" in status.stdout and "litert-" in status.stdout
    _switch(stack)
    try:
        subprocess.run([*cli, "prep", str(stack.spec_path)], check=True, capture_output=True, env=env, timeout=600)
        diff = subprocess.run([*cli, "diff", str(stack.spec_path)], capture_output=True, text=True, env=env, timeout=60)
    finally:
        _switch(stack)
    assert diff.returncode == 0, diff.stdout + diff.stderr
    assert "1 model change" in diff.stdout or "model change(s)" in diff.stdout
    assert "litert-int8" in diff.stdout and "litert-dynamic" in diff.stdout

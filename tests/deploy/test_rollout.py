"""Rollout on one host with the real Pulumi engine and Docker Engine: replicas behind the proxy,
zero failed requests across rollouts and crashes, rollback, recovery, drift, hardening."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import numpy as np
import pytest

from harness.sandbox import Sandbox, healers
from iac.loadgen import PacedLoad

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.pulumi, pytest.mark.tf, pytest.mark.timeout(1200)]
VARIANTS = {"int8": "litert-int8", "dynamic": "litert-dynamic"}


@pytest.fixture(scope="module")
def stack(digits_example: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """One deployed stack with 2 replicas for the whole module; destroyed at the end."""
    stack = Sandbox(tmp_path_factory.mktemp("rollout"), digits_example)
    with stack.deployed():
        yield stack


@pytest.fixture(scope="module")
def body(digits_example: Path) -> dict:
    with np.load(digits_example / "data" / "evaluation.npz") as data:
        return {"instances": [data["x"][0].tolist()]}


def quantization(stack: Sandbox) -> str:
    return "int8" if "quantization: int8" in (stack.dir / "model.yaml").read_text() else "dynamic"


def switch(stack: Sandbox) -> str:
    old = quantization(stack)
    new = "dynamic" if old == "int8" else "int8"
    stack.edit_spec(f"quantization: {old}", f"quantization: {new}")
    return new


def ready_replicas(stack: Sandbox) -> list[str]:
    return sorted(c.name for c in stack.containers("model") if c.status == "running")


def test_five_rollouts_under_load_fail_no_request(stack: Sandbox, body: dict) -> None:
    durations = []
    with PacedLoad(stack.endpoint, body, concurrency=8) as load:
        for _ in range(5):
            new = switch(stack)
            started = time.monotonic()
            stack.pulumi("up", "--yes", "--skip-preview")
            durations.append(time.monotonic() - started)
            assert stack.metadata()["variant"] == VARIANTS[new]
            assert len(ready_replicas(stack)) == 2
    print(f"rollouts: {[round(d, 1) for d in durations]} s; {load.result.ok} requests served")
    assert load.result.failures == []
    assert load.result.ok > 100


def test_version_that_never_gets_ready_fails_while_the_old_one_serves(stack: Sandbox, body: dict) -> None:
    serving = stack.metadata()["artifact_sha256"]
    before = ready_replicas(stack)
    switch(stack)
    stack.edit_spec("memory: 512Mi", "memory: 16Mi")  # the server cannot load its runtime in 16 MiB (out of memory)
    stack.edit_spec("ready_timeout: 60", "ready_timeout: 15")
    try:
        with PacedLoad(stack.endpoint, body, concurrency=8) as load:
            run = stack.run("up", "--yes", "--skip-preview", check=False)
        assert run.returncode != 0
        assert "did not become ready" in run.stdout and "previous version keeps serving" in run.stdout
        assert load.result.failures == []
        assert stack.metadata()["artifact_sha256"] == serving
        assert ready_replicas(stack) == before
    finally:
        stack.edit_spec("memory: 16Mi", "memory: 512Mi")
        stack.edit_spec("ready_timeout: 15", "ready_timeout: 60")
    stack.pulumi("up", "--yes", "--skip-preview")  # the next up converges on the fixed spec
    assert stack.metadata()["variant"] == VARIANTS[quantization(stack)]


def answers_readyz(container: Any, network: str) -> bool:
    address = (container.attrs["NetworkSettings"]["Networks"].get(network) or {}).get("IPAddress")
    try:
        with urllib.request.urlopen(f"http://{address}:8501/readyz", timeout=1) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def test_killed_replica_is_back_within_30s_with_no_failed_request(stack: Sandbox, body: dict) -> None:
    """The healer sees the kill in Docker's event stream and starts the replica again. Timed from
    the kill: running again, serving again (answers /readyz), and healthy by Docker's HEALTHCHECK
    (its first check comes one interval, 5 s, after the start)."""
    victim = stack.containers("model")[0]
    network = f"modelstack-{stack.name}-digits"
    times: dict[str, float] = {}
    with PacedLoad(stack.endpoint, body, concurrency=8) as load:
        time.sleep(1)
        killed = time.monotonic()
        victim.kill()
        while "healthy" not in times:
            victim.reload()
            now = time.monotonic() - killed
            if victim.status == "running":
                times.setdefault("running", now)
                if "serving" not in times and answers_readyz(victim, network):
                    times["serving"] = now
                if victim.attrs["State"].get("Health", {}).get("Status") == "healthy":
                    times["healthy"] = now
            assert now < 30, f"{victim.name} not back within 30 s ({victim.status}, {times})"
            time.sleep(0.05)
        time.sleep(1)
    print(
        "replica back: "
        + ", ".join(f"{k} after {v:.2f} s" for k, v in times.items())
        + f"; {load.result.ok} requests served"
    )
    assert load.result.failures == []
    assert times["serving"] < 5, "the healer restarts on the die event, not on a later poll"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_pulumi_up_killed_mid_rollout_then_recovery_converges(stack: Sandbox, sig: signal.Signals) -> None:
    new = switch(stack)
    process = stack.popen("up", "--yes", "--skip-preview")
    deadline = time.monotonic() + 120
    old_versions = {c.labels["org.modelstack.version"] for c in stack.containers("model")}
    while time.monotonic() < deadline:  # kill it once the new replicas are starting
        if {c.labels["org.modelstack.version"] for c in stack.containers("model")} - old_versions:
            break
        time.sleep(0.1)
    process.send_signal(sig)
    process.wait(timeout=300)
    # The documented recovery: release the lock (only a killed CLI leaves one), re-read the world, apply.
    if sig == signal.SIGKILL:
        stack.pulumi("cancel", "--yes")
    stack.pulumi("refresh", "--yes")
    stack.pulumi("up", "--yes", "--skip-preview")
    assert stack.metadata()["variant"] == VARIANTS[new]
    version = stack.outputs()["version"]
    models = stack.containers("model")
    assert sorted(c.labels["org.modelstack.version"] for c in models) == [version, version], "no orphaned replicas"
    assert len(stack.containers("proxy")) == 1
    assert len(healers(stack.owner)) == 1


def test_removed_replica_is_seen_by_refresh_and_recreated_by_up(stack: Sandbox) -> None:
    stack.containers("model")[0].remove(force=True)
    time.sleep(1.5)  # the healer only restarts stopped containers; a removed one is drift
    preview = json.loads(stack.pulumi("preview", "--refresh", "--json"))
    ops = {step["urn"].rsplit("::", 1)[-1]: step["op"] for step in preview["steps"]}
    assert ops.get("digits-replicas") == "update"
    stack.pulumi("up", "--yes", "--refresh", "--skip-preview")
    assert len(ready_replicas(stack)) == 2


def test_replicas_run_hardened(stack: Sandbox) -> None:
    replica = docker.from_env().containers.get(stack.containers("model")[0].id)
    host = replica.attrs["HostConfig"]
    config = replica.attrs["Config"]
    assert config["User"] == "10001:10001"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["Memory"] == 512 * 1024**2 and host["NanoCpus"] == 10**9 and host["PidsLimit"] == 256
    assert host["Privileged"] is False
    assert config["Healthcheck"]["Test"][0] == "CMD"
    assert not any("docker.sock" in (m.get("Source") or "") for m in replica.attrs["Mounts"])
    proxy = stack.containers("proxy")[0]
    assert proxy.attrs["Config"]["User"] == "33:33" and proxy.attrs["HostConfig"]["ReadonlyRootfs"] is True
    published = proxy.attrs["HostConfig"]["PortBindings"]["8080/tcp"][0]
    assert published == {"HostIp": "127.0.0.1", "HostPort": str(stack.port)}


def modelstack(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """Run the modelstack CLI; its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "iac.cli.app", *args], capture_output=True, text=True, env={**os.environ, **env}
    )


def test_status_and_model_diff(stack: Sandbox) -> None:
    spec = str(stack.dir / "model.yaml")
    deadline = time.monotonic() + 30
    while True:  # docker's healthcheck runs every 5 s
        run = modelstack("status", spec, "--stack", stack.name)
        if run.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2/2 ready" in run.stdout and stack.metadata()["variant"] in run.stdout and "healer    running" in run.stdout

    serving = quantization(stack)
    stack.edit_spec(f"quantization: {serving}", "quantization: float16")
    try:
        before = modelstack("diff", spec)
        modelstack("prep", spec).check_returncode()
        after = modelstack("diff", spec)
    finally:
        stack.edit_spec("quantization: float16", f"quantization: {serving}")
    assert before.returncode == 1 and "modelstack prep" in before.stderr
    assert after.returncode == 0, after.stderr
    assert (
        VARIANTS[serving] in after.stdout and "litert-float16" in after.stdout and "pixels[64]:float32" in after.stdout
    )


def test_api_key_is_a_pulumi_secret_passed_at_run_time(stack: Sandbox, body: dict) -> None:
    import urllib.error
    import urllib.request

    key = "k3y-" + stack.name
    stack.pulumi("config", "set", "--secret", "apiKey", key)
    stack.edit_spec("  threads: 1\n", "  threads: 1\n  api_key_env: DIGITS_API_KEY\n")
    try:
        stack.pulumi("up", "--yes", "--skip-preview")
        request = urllib.request.Request(
            stack.endpoint, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(request, timeout=10)
        assert denied.value.code == 401
        request.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

        replica = stack.containers("model")[0]
        assert f"DIGITS_API_KEY={key}" in replica.attrs["Config"]["Env"]
        image = docker.from_env().images.get(replica.image.id)
        assert key not in json.dumps(image.attrs)
        assert all(key not in (layer.get("CreatedBy") or "") for layer in image.history())
        state = "".join(p.read_text(errors="replace") for p in (stack.dir.parent / "state").rglob("*.json"))
        assert key not in state, "the key is stored encrypted in the stack's state"

        # `modelstack status` asks the server with the key from the variable the spec names.
        run = modelstack("status", str(stack.dir / "model.yaml"), "--stack", stack.name, DIGITS_API_KEY=key)
        assert "serving   litert-" in run.stdout and "nothing answers" not in run.stdout, run.stdout + run.stderr
    finally:
        stack.edit_spec("  threads: 1\n  api_key_env: DIGITS_API_KEY\n", "  threads: 1\n")
        stack.pulumi("up", "--yes", "--skip-preview")

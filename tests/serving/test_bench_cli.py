"""`modelstack bench` (the multi-process load generator) against the server, and `modelstack serve`."""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conformance import check_conformance
from serving_support import MODEL, REPO, SAMPLES, ServerProcess
from typer.testing import CliRunner

from iac.cli.app import app
from iac.loadgen import run_load


@pytest.fixture()
def server(fake_server: ServerProcess) -> ServerProcess:
    """The real server over a numpy stand-in model: the load generator needs no TensorFlow."""
    return fake_server


def test_run_load_measures_throughput_and_percentiles(server: ServerProcess) -> None:
    url = f"http://127.0.0.1:{server.port}/v1/models/{MODEL}:predict"
    bodies = [json.dumps({"instances": [row.tolist()]}).encode() for row in SAMPLES]
    result = run_load(url, bodies, concurrency=4, duration=1.0, processes=2, warmup=0.2)
    assert result.errors == 0 and result.requests > 50 and result.statuses == {"200": result.requests}
    assert result.throughput_rps == pytest.approx(result.requests / 1.0, rel=0.01)
    latency = result.latency_ms
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]


def test_bench_cli_json_and_errors(server: ServerProcess, tmp_path: Path) -> None:
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"instances": SAMPLES[:2].tolist()}))
    runner = CliRunner()
    url = f"http://127.0.0.1:{server.port}/v1/models/{MODEL}:predict"
    result = runner.invoke(app, ["bench", url, "--body", str(body), "-c", "2", "-d", "0.5", "--warmup", "0", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["errors"] == 0 and report["requests"] > 0 and report["concurrency"] == 2
    assert {"p50", "p95", "p99"} <= report["latency_ms"].keys()

    # Every request failing (404): reported, and the exit code says so.
    wrong = f"http://127.0.0.1:{server.port}/v1/models/nope:predict"
    result = runner.invoke(
        app, ["bench", wrong, "--body", str(body), "-c", "1", "-d", "0.3", "--warmup", "0", "--json"]
    )
    assert result.exit_code == 1
    assert json.loads(result.stdout)["statuses"].keys() == {"404"}

    # A base URL with --body cannot know the model: a user error, not a traceback.
    result = runner.invoke(app, ["bench", f"http://127.0.0.1:{server.port}", "--body", str(body)])
    assert result.exit_code == 2 and "has no path" in result.output


@pytest.mark.tf
def test_serve_runs_the_spec_locally(digits_example: Path) -> None:
    """`modelstack serve` preps (cached), serves on the port, passes conformance, stops on SIGINT."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "iac.cli.app",
            "serve",
            str(digits_example / "model.yaml"),
            "--port",
            "0",
            "--max-batch-size",
            "8",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    events: queue.Queue[dict] = queue.Queue()
    lines: list[str] = []

    def collect() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("{"):
                events.put(json.loads(line))

    threading.Thread(target=collect, daemon=True).start()
    port = None
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            try:
                event = events.get(timeout=0.5)
            except queue.Empty:
                assert proc.poll() is None, "".join(lines)
                continue
            if event.get("event") == "listening":
                port = event["port"]
            if event.get("event") == "ready":
                assert event["max_batch_size"] == 8
                break
        else:
            raise AssertionError("no ready event:\n" + "".join(lines))
        with np.load(digits_example / "data" / "evaluation.npz") as data:
            sample = data["x"][0].tolist()
        check_conformance(f"http://127.0.0.1:{port}", "digits", sample)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)
    assert code == 0, "".join(lines)


def test_paced_load_counts_a_refused_connection_as_a_failure_answered_by_no_version() -> None:
    from harness.processes import free_port
    from iac.loadgen import PacedLoad

    with PacedLoad(f"http://127.0.0.1:{free_port()}/v1/models/m:predict", {"instances": [[0]]}, concurrency=2) as load:
        time.sleep(0.3)
    assert load.result.ok == 0 and load.result.failures
    assert all("ConnectionRefusedError" in failure for failure in load.result.failures)
    assert load.result.pools == {}  # nothing answered, so no version is credited

"""Canary rollouts judged inside `pulumi up` (real Pulumi engine, real Docker Engine, real models).

Two stable replicas under 8 paced clients sending varied digits: a candidate trained on shuffled labels
(200 OK, same signature, wrong) is rolled back by the agreement check with no client-visible error and
`up` fails with one line; the state stays as it was (`refresh` changes nothing); a good candidate is
promoted with no failed request; with no traffic a candidate is never promoted (inconclusive).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.sandbox import Sandbox
from iac.loadgen import PacedLoad

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.pulumi, pytest.mark.tf, pytest.mark.timeout(1800)]

CANARY = """  rollout:
    strategy: canary
    steps:
      - weight: 10
        hold: 8
      - weight: 50
        hold: 6
    analysis:
      min_samples: 30
      max_p99_ratio: 4     # not what this test judges: 2 cores shared with other work make p99 noisy
"""


@pytest.fixture(scope="module")
def stack(digits_example: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    stack = Sandbox(tmp_path_factory.mktemp("canary"), digits_example)
    stack.edit_spec("  ready_timeout: 60", CANARY + "  ready_timeout: 60")
    with stack.deployed():
        yield stack


@pytest.fixture(scope="module")
def bodies(digits_example: Path) -> list[dict[str, Any]]:
    with np.load(digits_example / "data" / "evaluation.npz") as data:
        return [{"instances": [row.tolist()]} for row in data["x"][:200]]


def replicas_state(stack: Sandbox) -> dict[str, Any]:
    resources = json.loads(stack.pulumi("stack", "export"))["deployment"]["resources"]
    state = next(r for r in resources if r["urn"].endswith("::digits-replicas"))
    return {k: state["outputs"][k] for k in ("version", "replica_names", "healthy")}


def test_a_wrong_labels_candidate_is_rolled_back_by_agreement_with_no_client_error(
    stack: Sandbox, bodies: list[dict[str, Any]]
) -> None:
    from modelprep.examples.digits_faulty import shuffled

    serving, before = stack.metadata()["artifact_sha256"], replicas_state(stack)
    shuffled(stack.dir)
    stack.edit_spec("path: model/digits.keras", "path: model/digits-shuffled.keras")
    try:
        with PacedLoad(stack.endpoint, bodies, concurrency=8) as load:
            run = stack.run("up", "--yes", "--skip-preview", check=False)
        assert run.returncode != 0
        assert (
            "canary rollout of version" in run.stdout
            and "rolled back at step 1/2 (10% of requests): failed on top-1 agreement: candidate 0." in run.stdout
        ), run.stdout[-4000:]
        assert load.result.failures == [] and load.result.ok > 100
        assert load.result.pools.get("model_candidate", 0) > 0  # it did answer live requests, rightly or not
        assert stack.metadata()["artifact_sha256"] == serving
        assert sorted(c.name for c in stack.containers("model")) == sorted(before["replica_names"])
        record = stack.outputs()["last_rollout"]
        assert (record["outcome"], record["metric"], record["steps"][0]["step"]) == (
            "rolled back",
            "top-1 agreement",
            1,
        )
        assert float(record["candidate"]) < 0.5 and record["samples"] >= 30
        stack.pulumi("refresh", "--yes")
        assert replicas_state(stack) == before  # what the state says is what runs
    finally:
        stack.edit_spec("path: model/digits-shuffled.keras", "path: model/digits.keras")


def test_a_good_candidate_is_promoted_through_every_step_with_no_failed_request(
    stack: Sandbox, bodies: list[dict[str, Any]]
) -> None:
    stack.edit_spec("quantization: int8", "quantization: dynamic")
    # Preview tells the model change where the infrastructure diff is: first that prep is needed ...
    diff = stack.pulumi("preview", "--diff")
    assert re.search(r'prep\s*: "prep needed"', diff), diff[-4000:]
    assert "by canary: 10% for 8 s, 50% for 6 s, then 100%" in diff  # the plan, beside the model
    # ... then, once prepped, the model's own fields, old and new.
    subprocess.run(
        [sys.executable, "-m", "iac.cli.app", "prep", str(stack.dir / "model.yaml")], check=True, capture_output=True
    )
    diff = stack.pulumi("preview", "--diff")
    assert re.search(r'variant\s*: "litert-int8" => "litert-dynamic"', diff), diff[-4000:]
    assert re.search(r"bytes\s*: \d+ => \d+", diff)
    with PacedLoad(stack.endpoint, bodies, concurrency=8) as load:
        run = stack.run("up", "--yes", "--skip-preview", check=False)
    assert run.returncode == 0, run.stdout[-4000:]
    assert "every step passed; promoting" in run.stdout  # the progress, shown by `up`
    assert load.result.failures == []
    record = stack.outputs()["last_rollout"]
    assert record["outcome"] == "promoted" and [s["outcome"] for s in record["steps"]] == ["pass", "pass"]
    assert stack.metadata()["variant"] == "litert-dynamic"


def test_without_traffic_a_candidate_is_never_promoted(stack: Sandbox) -> None:
    serving = stack.metadata()["artifact_sha256"]
    stack.edit_spec("quantization: dynamic", "quantization: int8")
    run = stack.run("up", "--yes", "--skip-preview", check=False)
    assert run.returncode != 0
    assert "inconclusive on requests: candidate 0" in run.stdout, run.stdout[-4000:]
    assert stack.outputs()["last_rollout"]["outcome"] == "inconclusive"
    assert stack.metadata()["artifact_sha256"] == serving

"""Rollout safety on this host: canary and shadow rollouts judged inside `pulumi up` (real engine, real Docker).

    .venv/bin/python -m benchmarks.rollout_safety_bench [--hold 10] [--json out.json]
    .venv/bin/python -m benchmarks.rollout_safety_bench --target kubernetes [--hold 10] [--json out.json]

A sandbox copy of the digits stack (`harness.sandbox`), 2 stable replicas, `deploy.rollout` canary
steps 10% -> 50% -> 100% (each held `--hold` seconds, at least 30 samples a window), 8 paced clients
sending the evaluation digits through the proxy. Each candidate is rolled out in turn with `pulumi up`:

  5xx        a diverged retrain (first-layer weights x1e37): NaN on real pixels, answered with 500
  wrong      the same network trained on shuffled labels: 200 OK, same signature, wrong predictions
  slow       the serving model on 0.05 CPU instead of 1 (at least 3x slower at p99)
  good       the serving model quantized dynamic instead of int8
  shadow     the good candidate again with strategy shadow: clients must see only the stable version
  idle       a candidate with no traffic at all: inconclusive, never promoted

With `--target kubernetes` the same candidates go to a local cluster with one real node
(`harness.k8s.control_plane`: kube-apiserver, kubelet with cri-dockerd, kube-proxy, a registry; started
here and stopped at the end) through `harness.k8s.sandbox.K8sSandbox`: 2 stable pods (requests 100m,
limits.cpu 1), the nginx proxy pods in front, the clients on the Service's cluster IP. A Kubernetes
rollout judges a new image only (a change of resources alone rolls unjudged), so there `slow` is a new
image (quantization none) whose pods get limits.cpu 30m (50m measured 2.8x at p99, below the 3x
asked); its resources stay with the stable pods after its rollback, so it runs after the others. What
the stable Deployment runs after each `up` (image, CPU limit) is reported beside the outcome.

Reported per candidate: outcome, the failing metric with both values, seconds from the first step to
the decision, client requests answered / failed during the rollout and after it, and answers per version.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROLLOUT = """  rollout:
    strategy: {strategy}
    steps:
      - weight: {first}
        hold: {hold}
      - weight: 50
        hold: {hold}
    analysis:
      min_samples: 30
"""
CANDIDATES = {
    # name: (spec edits (old, new), strategy, load)
    "5xx": (
        [
            ("path: model/digits.keras", "path: model/digits-exploded.keras"),
            ("quantization: int8", "quantization: none"),
        ],
        "canary",
        True,
    ),
    "wrong": ([("path: model/digits.keras", "path: model/digits-shuffled.keras")], "canary", True),
    "slow": ([("cpus: 1.0", "cpus: 0.05")], "canary", True),
    "good": ([("quantization: int8", "quantization: dynamic")], "canary", True),
    "shadow": ([("quantization: int8", "quantization: float16")], "shadow", True),
    "idle": ([("quantization: int8", "quantization: none")], "canary", False),
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--only", nargs="*", default=list(CANDIDATES))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--target", choices=("docker", "kubernetes"), default="docker")
    args = parser.parse_args()
    if args.target == "kubernetes":
        return main_kubernetes(args)

    from harness.sandbox import Sandbox
    from modelprep.examples.digits import train
    from modelprep.examples.digits_faulty import exploded, shuffled

    root = Path(tempfile.mkdtemp(prefix="modelstack-safety-bench-"))
    os.environ.setdefault("MODELSTACK_CACHE", str(root / "cache"))
    example = root / "example"
    train(example)
    shuffled(example)
    exploded(example)
    stack = Sandbox(root, example)
    stack.edit_spec(
        "  ready_timeout: 60", ROLLOUT.format(strategy="canary", first=10, hold=args.hold) + "  ready_timeout: 60"
    )
    with np.load(example / "data" / "evaluation.npz") as data:
        bodies = [{"instances": [row.tolist()]} for row in data["x"]]
    results: dict[str, Any] = {"hold_s": args.hold, "candidates": {}}
    stack.pulumi("stack", "init", stack.name)
    try:
        stack.pulumi("up", "--yes", "--skip-preview")
        for name in args.only:
            edits, strategy, loaded = CANDIDATES[name]
            results["candidates"][name] = roll(stack, bodies, edits, strategy, loaded, args.hold)
            print(f"{name}: {json.dumps(results['candidates'][name])}", flush=True)
    finally:
        stack.pulumi("destroy", "--yes")
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def roll(
    stack: Any, bodies: list[dict[str, Any]], edits: list[tuple[str, str]], strategy: str, loaded: bool, hold: float
) -> dict[str, Any]:
    from iac.loadgen import PacedLoad

    spec = stack.dir / "model.yaml"
    original = spec.read_text()
    for old, new in edits:
        stack.edit_spec(old, new)
    stack.edit_spec("    strategy: canary", f"    strategy: {strategy}")
    # The candidate's prep first, so the rollout's time is the rollout's (prep is cached for `up`).
    subprocess.run([sys.executable, "-m", "iac.cli.app", "prep", str(spec)], check=True, capture_output=True)
    try:
        if loaded:
            with PacedLoad(stack.endpoint, bodies, concurrency=8) as load:
                started = time.monotonic()
                run = stack.run("up", "--yes", "--skip-preview", check=False)
                seconds = time.monotonic() - started
                during = (load.result.ok, len(load.result.failures), dict(load.result.pools))
                time.sleep(3)  # after the decision: the version serving now
            after_ok = load.result.ok - during[0]
            after_failed = len(load.result.failures) - during[1]
        else:
            started = time.monotonic()
            run = stack.run("up", "--yes", "--skip-preview", check=False)
            seconds, during, after_ok, after_failed = time.monotonic() - started, (0, 0, {}), 0, 0
        return report(stack.outputs().get("last_rollout") or {}, run, seconds, during, after_ok, after_failed)
    finally:
        spec.write_text(original)


def report(
    record: dict[str, Any],
    run: subprocess.CompletedProcess[str],
    seconds: float,
    during: tuple[int, int, dict[str, int]],
    after_ok: int,
    after_failed: int,
) -> dict[str, Any]:
    """One candidate's figures: the stack's `last_rollout`, the line `up` failed with, the clients' counts."""
    shown = re.search(r"error: ((canary|shadow) rollout of version \S+ rolled back at .*)", run.stdout)
    return {
        "outcome": record.get("outcome"),
        "up_exit": run.returncode,
        "up_s": round(seconds, 1),
        "reason": record.get("reason") or None,
        "shown_by_up": shown.group(1).strip() if shown else None,
        "metric": record.get("metric"),
        "candidate": record.get("candidate"),
        "stable": record.get("stable"),
        "steps": [
            {
                k: s.get(k)
                for k in (
                    "step",
                    "weight",
                    "outcome",
                    "requests",
                    "error_rate",
                    "p99_ms",
                    "stable_p99_ms",
                    "agreement",
                    "agreement_samples",
                )
            }
            for s in record.get("steps", [])
        ],
        "client_ok_during": during[0],
        "client_failed_during": during[1],
        "answered_by": during[2],
        "client_ok_after": after_ok,
        "client_failed_after": after_failed,
    }


# -- Kubernetes: a local cluster with one real node (harness.k8s), the stack a K8sSandbox --------------------

K8S_NAMESPACE = "models"
K8S_RESOURCES = {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}
K8S_SLOW = {"requests": {"cpu": "30m", "memory": "128Mi"}, "limits": {"cpu": "30m", "memory": "512Mi"}}
K8S_CANDIDATES: dict[str, tuple[dict[str, dict[str, Any]], dict[str, Any], str, bool]] = {
    # name: (top-level spec sections updated, deploy settings updated, strategy, load)
    "5xx": (
        {"model": {"path": "model/digits-exploded.keras"}, "optimize": {"quantization": "none"}},
        {},
        "canary",
        True,
    ),
    "wrong": ({"model": {"path": "model/digits-shuffled.keras"}}, {}, "canary", True),
    # A new image (only an image is judged on Kubernetes) on 30m CPU instead of 1: its pod template's
    # resources stay with the stable pods after a rollback (unjudged), so it runs after the others.
    "slow": ({"optimize": {"quantization": "none"}}, {"resources": K8S_SLOW}, "canary", True),
    "good": ({"optimize": {"quantization": "dynamic"}}, {}, "canary", True),
    "shadow": ({"optimize": {"quantization": "float16"}}, {}, "shadow", True),
    "idle": ({"optimize": {"quantization": "none"}}, {}, "canary", False),
}


def k8s_rollout(strategy: str, hold: float) -> dict[str, Any]:
    return {
        "strategy": strategy,
        "steps": [{"weight": 10, "hold": hold}, {"weight": 50, "hold": hold}],
        "analysis": {"min_samples": 30},
    }


def main_kubernetes(args: argparse.Namespace) -> int:
    from harness.k8s.control_plane import restricted_namespace, start, stop
    from harness.k8s.sandbox import K8sSandbox
    from modelprep.examples.digits import train
    from modelprep.examples.digits_faulty import exploded, shuffled

    root = Path(tempfile.mkdtemp(prefix="modelstack-safety-bench-k8s-"))
    os.environ.setdefault("MODELSTACK_CACHE", str(root / "cache"))
    example = root / "example"
    train(example)
    shuffled(example)
    exploded(example)
    with np.load(example / "data" / "evaluation.npz") as data:
        bodies = [{"instances": [row.tolist()]} for row in data["x"]]
    results: dict[str, Any] = {"target": "kubernetes", "hold_s": args.hold, "candidates": {}}
    cluster = start(root / "cluster", kwok_nodes=0, real_node=True, build=False)  # tools: scripts/k8s_tools.sh
    try:
        restricted_namespace(cluster, K8S_NAMESPACE)
        deploy = {
            "target": "kubernetes",
            "namespace": K8S_NAMESPACE,
            "registry": cluster.registry,
            "kubeconfig": cluster.kubeconfig,
            "replicas": 2,
            "resources": K8S_RESOURCES,
            "progress_deadline": 120,
            "startup_timeout": 60,
            "rollout": k8s_rollout("canary", args.hold),
        }
        stack = K8sSandbox(root / "stack", example, deploy)
        stack.init()
        try:
            stack.up()
            # A candidate changing the pod template (slow's CPU limit) leaves it to the stable pods: last.
            for name in sorted(args.only, key=lambda n: bool(K8S_CANDIDATES[n][1])):
                try:
                    results["candidates"][name] = roll_kubernetes(stack, cluster, bodies, name, args.hold)
                except Exception as exc:  # noqa: BLE001 - kept in the results; the next candidate still runs
                    results["candidates"][name] = {"error": f"{type(exc).__name__}: {exc}"[-4000:]}
                print(f"{name}: {json.dumps(results['candidates'][name])}", flush=True)
                if args.json:  # as it goes: a later failure keeps what was measured
                    args.json.write_text(json.dumps(results, indent=2) + "\n")
        finally:
            stack.destroy()
    finally:
        stop(cluster)
    print(json.dumps(results, indent=2))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


def roll_kubernetes(stack: Any, cluster: Any, bodies: list[dict[str, Any]], name: str, hold: float) -> dict[str, Any]:
    from iac.deploy.targets.kubernetes.settings import endpoint
    from iac.loadgen import PacedLoad
    from iac.spec.load import load_resolved

    sections, settings, strategy, loaded = K8S_CANDIDATES[name]
    original = stack.spec_path.read_text()
    doc = stack.spec()
    stack.write_spec(**{key: {**doc[key], **changes} for key, changes in sections.items()})
    stack.edit_kubernetes(**settings, rollout=k8s_rollout(strategy, hold))
    # The candidate's prep first, so the rollout's time is the rollout's (prep is cached for `up`).
    prep = [sys.executable, "-m", "iac.cli.app", "prep", str(stack.spec_path)]
    subprocess.run(prep, check=True, capture_output=True)
    url = endpoint(load_resolved(stack.spec_path))
    try:
        if loaded:
            with PacedLoad(url, bodies, concurrency=8) as load:
                started = time.monotonic()
                run = stack.run("up", "--yes", "--skip-preview", check=False)
                seconds = time.monotonic() - started
                during = (load.result.ok, len(load.result.failures), dict(load.result.pools))
                time.sleep(3)  # after the decision: the version serving now
            after_ok = load.result.ok - during[0]
            after_failed = len(load.result.failures) - during[1]
            failures = [str(f) for f in load.result.failures[:5]]
        else:
            started = time.monotonic()
            run = stack.run("up", "--yes", "--skip-preview", check=False)
            seconds, during, after_ok, after_failed, failures = time.monotonic() - started, (0, 0, {}), 0, 0, []
        (stack.dir.parent / f"up-{name}.log").write_text(run.stdout + run.stderr)
        result = report(stack.outputs().get("last_rollout") or {}, run, seconds, during, after_ok, after_failed)
        result["deployments_after"] = _k8s_deployments(cluster)
        result["first_failures"] = failures
        if run.returncode != 0 and not result["shown_by_up"]:
            result["up_tail"] = (run.stdout[-3000:] + run.stderr[-2000:]).splitlines()
    finally:
        stack.spec_path.write_text(original)
    return result


def _k8s_deployments(cluster: Any) -> dict[str, dict[str, Any]]:
    """The namespace's Deployments after an `up`: image digest (12 hex), CPU limit, ready pods."""
    from kubernetes import client

    apps = client.AppsV1Api(cluster.api())
    found = {}
    for d in apps.list_namespaced_deployment(K8S_NAMESPACE).items:
        container = d.spec.template.spec.containers[0]
        limits = (container.resources.limits or {}) if container.resources else {}
        found[d.metadata.name] = {
            "image": container.image.rpartition("@")[2].removeprefix("sha256:")[:12],
            "cpu_limit": limits.get("cpu"),
            "ready": d.status.ready_replicas or 0,
        }
    return found


if __name__ == "__main__":
    sys.exit(main())

"""Rollout safety on this host: canary and shadow rollouts judged inside `pulumi up` (real engine, real Docker).

    .venv/bin/python -m benchmarks.rollout_safety_bench [--hold 10] [--json out.json]

A sandbox copy of the digits stack (`harness.sandbox`), 2 stable replicas, `deploy.rollout` canary
steps 10% -> 50% -> 100% (each held `--hold` seconds, at least 30 samples a window), 8 paced clients
sending the evaluation digits through the proxy. Each candidate is rolled out in turn with `pulumi up`:

  5xx        a diverged retrain (first-layer weights x1e37): NaN on real pixels, answered with 500
  wrong      the same network trained on shuffled labels: 200 OK, same signature, wrong predictions
  slow       the serving model on 0.1 CPU instead of 1 (slower at p99)
  good       the serving model quantized dynamic instead of int8
  shadow     the good candidate again with strategy shadow: clients must see only the stable version
  idle       a candidate with no traffic at all: inconclusive, never promoted

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
    "slow": ([("cpus: 1.0", "cpus: 0.1")], "canary", True),
    "good": ([("quantization: int8", "quantization: dynamic")], "canary", True),
    "shadow": ([("quantization: int8", "quantization: float16")], "shadow", True),
    "idle": ([("quantization: int8", "quantization: none")], "canary", False),
}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hold", type=float, default=10.0)
    parser.add_argument("--only", nargs="*", default=list(CANDIDATES))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

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
        record = stack.outputs().get("last_rollout") or {}
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
    finally:
        spec.write_text(original)


if __name__ == "__main__":
    sys.exit(main())

"""Rollout timings on this host, with the real Pulumi engine and Docker Engine.

    .venv/bin/python -m benchmarks.rollout_bench [--rounds 3] [--json out.json]

Deploys a sandbox copy of the digits stack (`harness.sandbox`) with 2 replicas, then measures,
under a steady paced load (`iac.loadgen.PacedLoad`) of 8 concurrent clients through the proxy:
  - `pulumi up` for a model change (the quantization flips int8 <-> dynamic; only the first
    flip preps, later ones find the artifact cached),
  - a no-op `pulumi preview` and a no-op `pulumi up`,
and counts failed requests. Destroys the stack at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    fn()
    return time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    from harness.sandbox import Sandbox
    from iac.loadgen import PacedLoad
    from modelprep.examples.digits import train

    root = Path(tempfile.mkdtemp(prefix="modelstack-rollout-bench-"))
    os.environ.setdefault("MODELSTACK_CACHE", str(root / "cache"))
    example = root / "example"
    train(example)
    stack = Sandbox(root, example)
    stack.pulumi("stack", "init", stack.name)
    with np.load(example / "data" / "evaluation.npz") as data:
        body = {"instances": [data["x"][0].tolist()]}
    results: dict[str, list[float]] = {"first_up": [], "rollout": [], "noop_preview": [], "noop_up": []}
    try:
        results["first_up"].append(timed(lambda: stack.pulumi("up", "--yes", "--skip-preview")))
        with PacedLoad(stack.endpoint, body, concurrency=8) as load:
            for i in range(2 * args.rounds):
                old, new = ("int8", "dynamic") if i % 2 == 0 else ("dynamic", "int8")
                stack.edit_spec(f"quantization: {old}", f"quantization: {new}")
                results["rollout"].append(timed(lambda: stack.pulumi("up", "--yes", "--skip-preview")))
            for _ in range(args.rounds):
                results["noop_preview"].append(timed(lambda: stack.pulumi("preview")))
                results["noop_up"].append(timed(lambda: stack.pulumi("up", "--yes", "--skip-preview")))
        served, failures = load.result.ok, len(load.result.failures)
    finally:
        stack.pulumi("destroy", "--yes")

    # Only the first rollout preps (int8 was prepped by the first up); later ones reuse the cache,
    # as a user's does after `modelstack prep` or `modelstack diff`.
    cached = results["rollout"][1:]
    summary = {
        "first_up_s": round(results["first_up"][0], 2),
        "rollout_with_prep_s": round(results["rollout"][0], 2),
        "rollout_cached_prep_s": round(statistics.median(cached), 2),
        "noop_preview_s": round(statistics.median(results["noop_preview"]), 2),
        "noop_up_s": round(statistics.median(results["noop_up"]), 2),
        "requests_served": served,
        "failed_requests": failures,
        "raw_s": {k: [round(v, 2) for v in vs] for k, vs in results.items()},
    }
    print("| measurement | seconds (median) |\n|---|---|")
    for key in ("first_up_s", "rollout_with_prep_s", "rollout_cached_prep_s", "noop_preview_s", "noop_up_s"):
        print(f"| {key.removesuffix('_s').replace('_', ' ')} | {summary[key]} |")
    print(f"\nunder load: {served} requests served, {failures} failed")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

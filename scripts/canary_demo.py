"""`make canary-demo`: deploy the digits model, roll a wrong-labels version (rolled back, reason printed),
then a good one (promoted), under 8 clients; print both outcomes; destroy.

Runs in a sandbox copy of stacks/digits (its own state, stack name and port): the user's stacks are
not touched. See docs/rollout.md, "Canary and shadow".
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

CANARY = """  rollout:
    strategy: canary
    steps:
      - weight: 10
        hold: 10
      - weight: 50
        hold: 10
    analysis:
      min_samples: 30
      max_p99_ratio: 3
"""


def main() -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # training's C++ log lines would bury the outcomes
    from benchmarks.rollout_safety_bench import roll
    from harness.sandbox import Sandbox
    from modelprep.examples.digits import train
    from modelprep.examples.digits_faulty import shuffled

    root = Path(tempfile.mkdtemp(prefix="modelstack-canary-demo-"))
    os.environ.setdefault("MODELSTACK_CACHE", str(Path.home() / ".cache" / "modelstack"))
    example = root / "example"
    print("training the digits model and a copy trained on shuffled labels ...", flush=True)
    train(example)
    shuffled(example)
    stack = Sandbox(root, example)
    stack.edit_spec("  ready_timeout: 60", CANARY + "  ready_timeout: 60")
    with np.load(example / "data" / "evaluation.npz") as data:
        bodies = [{"instances": [row.tolist()]} for row in data["x"]]
    stack.pulumi("stack", "init", stack.name)
    try:
        print(f"pulumi up: digits, 2 replicas, on {stack.base_url} ...", flush=True)
        stack.pulumi("up", "--yes", "--skip-preview")
        print("rolling the wrong-labels version (canary 10% -> 50% -> 100%) under 8 clients ...", flush=True)
        wrong = roll(
            stack, bodies, [("path: model/digits.keras", "path: model/digits-shuffled.keras")], "canary", True, 10
        )
        print(f"  {wrong['outcome']}: {wrong['reason']}")
        print(f"  clients: {wrong['client_ok_during']} answered, {wrong['client_failed_during']} failed")
        print("rolling a good version (quantized dynamic instead of int8) ...", flush=True)
        good = roll(stack, bodies, [("quantization: int8", "quantization: dynamic")], "canary", True, 10)
        steps = ", ".join(f"{step['weight']}%: agreement {step['agreement']}" for step in good["steps"])
        print(f"  {good['outcome']}: every step passed ({steps})")
        print(f"  clients: {good['client_ok_during']} answered, {good['client_failed_during']} failed")
        return 0 if (wrong["outcome"], good["outcome"]) == ("rolled back", "promoted") else 1
    finally:
        stack.pulumi("destroy", "--yes")


if __name__ == "__main__":
    sys.exit(main())

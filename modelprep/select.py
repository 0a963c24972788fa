"""The accuracy gate and the objective: which measured variant ships, and why.

- smallest: fewest artifact bytes (then fewest gzipped bytes, then lowest p50);
- fastest: lowest single-sample p50 latency (then fewest bytes);
- balanced: lowest log2(bytes / fewest bytes) + log2(p50 / lowest p50) + loss / allowed loss,
  i.e. each halving of size or latency is worth as much as a whole allowed accuracy loss.

Only variants that pass the gate and are eligible (their runtime may be served) compete.
"""

from __future__ import annotations

import math
from typing import Any

from iac.spec.errors import Problem
from modelprep.evaluate import loss_of


def mark_gate(entries: list[dict[str, Any]], baseline: float, metric: str, allowed: float) -> None:
    for entry in entries:
        loss = loss_of(metric, baseline, entry["accuracy"])
        entry["accuracy_drop"] = round(loss, 6)
        entry["passed_gate"] = loss <= allowed + 1e-9


def choose(entries: list[dict[str, Any]], objective: str, allowed: float = 0.0) -> tuple[dict[str, Any] | None, str]:
    pool = [e for e in entries if e["passed_gate"] and e.get("eligible", True)]
    if not pool:
        return None, "no candidate passed the accuracy gate"
    if objective == "fastest":
        best = min(pool, key=lambda e: (e["latency_p50_us"], e["size_bytes"], e["name"]))
        why = f"fastest single-sample p50 ({best['latency_p50_us']:.1f} µs) among {len(pool)} passing candidates"
    elif objective == "balanced":
        smallest = min(e["size_bytes"] for e in pool)
        quickest = min(e["latency_p50_us"] for e in pool) or 1e-9

        def score(e: dict[str, Any]) -> float:
            penalty = max(e["accuracy_drop"], 0.0) / allowed if allowed > 0 else 0.0
            return math.log2(e["size_bytes"] / smallest) + math.log2(max(e["latency_p50_us"], 1e-9) / quickest) + penalty

        for e in pool:
            e["balanced_score"] = round(score(e), 4)
        best = min(pool, key=lambda e: (e["balanced_score"], e["size_bytes"], e["name"]))
        why = (f"best balance of size, latency and accuracy (score {best['balanced_score']:.2f}: "
               f"log2 size ratio + log2 latency ratio + loss/allowed) among {len(pool)} passing candidates")
    else:
        best = min(pool, key=lambda e: (e["size_bytes"], e["gzip_bytes"], e["latency_p50_us"], e["name"]))
        why = f"smallest artifact ({best['size_bytes']:,} bytes) among {len(pool)} passing candidates"
    return best, why


def miss_problems(report: dict[str, Any]) -> list[Problem]:
    """One problem per candidate: how far it missed the gate (or why it could not be chosen)."""
    metric, allowed = report["metric"], report["max_accuracy_drop"]
    problems = []
    for e in report["variants"]:
        if e["passed_gate"]:
            problem = (f"{e['name']} passes the gate ({_loss_text(metric, e, report)}) but may not be chosen: "
                       f"{e.get('not_eligible_because', 'not eligible')}")
            fix = "name it in optimize.variants to allow it"
        else:
            problem = (f"{e['name']} {_loss_text(metric, e, report)}, "
                       f"{_amount(metric, e['accuracy_drop'] - allowed)} more than the allowed {_amount(metric, allowed)}")
            fix = "allow a larger drop, or try gentler variants (litert-float16, litert-dynamic, litert-float32)"
        problems.append(Problem("model.yaml", "optimize.max_accuracy_drop", problem, fix))
    return problems


def _loss_text(metric: str, e: dict[str, Any], report: dict[str, Any]) -> str:
    base, value = report["baseline_accuracy"], e["accuracy"]
    if metric == "mae":
        return f"raises mae by {e['accuracy_drop']:.4f} ({base:.4f} → {value:.4f})"
    what = "accuracy" if metric == "accuracy" else f"top-{report.get('top_k')} accuracy"
    return f"loses {e['accuracy_drop'] * 100:.2f} points of {what} ({base:.4f} → {value:.4f})"


def _amount(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric == "mae" else f"{value * 100:.2f} points"

"""The accuracy gate and the objective: which measured variant ships, and why.

- smallest: fewest artifact bytes (then fewest gzipped bytes, then lowest p50);
- fastest: lowest single-sample p50 latency (then fewest bytes);
- balanced: lowest log2(bytes / fewest bytes) + log2(p50 / lowest p50) + loss / allowed loss,
  i.e. each halving of size or latency is worth as much as a whole allowed accuracy loss.

Only variants that pass the gate and are eligible (their runtime may be served) compete.
"""

from __future__ import annotations

import math

from iac.spec.errors import Problem, UserError
from modelprep.evaluate import loss_of
from modelprep.report import InputSignature, Measure, PrepReport
from modelprep.request import PrepRequest


def gated(entries: list[Measure], baseline: float, metric: str, allowed: float) -> list[Measure]:
    """Each entry with its loss against the baseline and whether that loss is allowed."""
    out = []
    for entry in entries:
        loss = loss_of(metric, baseline, entry.accuracy)
        out.append(entry.model_copy(update={"accuracy_drop": round(loss, 6), "passed_gate": loss <= allowed + 1e-9}))
    return out


def choose(entries: list[Measure], objective: str, allowed: float = 0.0) -> tuple[list[Measure], str | None, str]:
    """(entries, with the winner marked chosen and balanced scores set; the winner's name or
    None; why)."""
    pool = [e for e in entries if e.passed_gate and e.eligible]
    if not pool:
        return entries, None, "no candidate passed the accuracy gate"
    if objective == "fastest":
        best = min(pool, key=lambda e: (e.latency_p50_us, e.size_bytes, e.name))
        why = f"fastest single-sample p50 ({best.latency_p50_us:.1f} µs) among {len(pool)} passing candidates"
    elif objective == "balanced":
        smallest = min(e.size_bytes for e in pool)
        quickest = min(e.latency_p50_us for e in pool) or 1e-9

        def score(e: Measure) -> float:
            penalty = max(e.accuracy_drop or 0.0, 0.0) / allowed if allowed > 0 else 0.0
            return round(math.log2(e.size_bytes / smallest) + math.log2(max(e.latency_p50_us, 1e-9) / quickest) + penalty, 4)

        scores = {e.name: score(e) for e in pool}
        entries = [e.model_copy(update={"balanced_score": scores[e.name]}) if e.name in scores else e for e in entries]
        best = min((e for e in entries if e.name in scores), key=lambda e: (scores[e.name], e.size_bytes, e.name))
        why = (f"best balance of size, latency and accuracy (score {scores[best.name]:.2f}: "
               f"log2 size ratio + log2 latency ratio + loss/allowed) among {len(pool)} passing candidates")
    else:
        best = min(pool, key=lambda e: (e.size_bytes, e.gzip_bytes, e.latency_p50_us, e.name))
        why = f"smallest artifact ({best.size_bytes:,} bytes) among {len(pool)} passing candidates"
    return [e.model_copy(update={"chosen": e.name == best.name}) for e in entries], best.name, why


def miss_problems(entries: list[Measure], metric: str, allowed: float, baseline: float, top_k: int,
                  where: str) -> list[Problem]:
    """One problem per candidate, located at the gate's field: how far it missed the gate (or why
    it could not be chosen)."""
    problems = []
    for e in entries:
        drop = e.accuracy_drop or 0.0
        if e.passed_gate:
            problem = (f"{e.name} passes the gate ({_loss_text(metric, e, baseline, top_k)}) but may not be chosen: "
                       f"{e.not_eligible_because or 'not eligible'}")
            fix = "name it in optimize.variants to allow it"
        else:
            problem = (f"{e.name} {_loss_text(metric, e, baseline, top_k)}, "
                       f"{_amount(metric, drop - allowed)} more than the allowed {_amount(metric, allowed)}")
            fix = "allow a larger drop, or try gentler variants (litert-float16, litert-dynamic, litert-float32)"
        problems.append(Problem(where, "optimize.max_accuracy_drop", problem, fix))
    return problems


def _loss_text(metric: str, e: Measure, base: float, top_k: int) -> str:
    drop = e.accuracy_drop or 0.0
    if metric == "mae":
        return f"raises mae by {drop:.4f} ({base:.4f} → {e.accuracy:.4f})"
    what = "accuracy" if metric == "accuracy" else f"top-{top_k} accuracy"
    return f"loses {drop * 100:.2f} points of {what} ({base:.4f} → {e.accuracy:.4f})"


def _amount(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric == "mae" else f"{value * 100:.2f} points"


def decide(req: PrepRequest, key: str, model_sha256: str, evaluation_samples: int, baselines: list[Measure],
           entries: list[Measure]) -> PrepReport:
    """Gate every entry against the Keras baseline, choose one by the objective, and report; a
    UserError at the gate's line when nothing may be chosen."""
    o = req.optimize
    metric, allowed = o.metric.value, o.max_accuracy_drop
    reference = baselines[0].accuracy
    entries, chosen, why = choose(gated(entries, reference, metric, allowed), o.objective.value, allowed)
    if chosen is None:
        raise UserError(miss_problems(entries, metric, allowed, reference, o.top_k, req.where("optimize.max_accuracy_drop")))
    return PrepReport.of(
        key=key, metric=o.metric, top_k=o.top_k, objective=o.objective, max_accuracy_drop=allowed,
        baseline_accuracy=reference, model_sha256=model_sha256, threads=req.threads,
        input=InputSignature(name=req.input_name, shape=list(req.sample_shape),
                             **({} if req.inputs is None else {"dtype": req.inputs[0][2]})), evaluation_samples=evaluation_samples,
        baselines=gated(baselines, reference, metric, allowed), variants=entries, choice=why,
    )

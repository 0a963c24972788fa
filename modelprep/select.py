"""The accuracy gate and the objective: which measured variant ships, and why.

- smallest: fewest artifact bytes (then fewest gzipped bytes, then lowest p50);
- fastest: lowest single-sample p50 latency (then fewest bytes);
- balanced: lowest log2(bytes / fewest bytes) + log2(p50 / lowest p50) + loss / allowed loss,
  i.e. each halving of size or latency is worth as much as a whole allowed accuracy loss.

Only variants that pass the gate and are eligible (their runtime may be served) compete. The gate
reads the metric's direction from the family (`modelprep.family.Quality`): a loss of accuracy, or
a rise of mae, KL divergence or word error rate.
"""

from __future__ import annotations

import math

from iac.spec.errors import Problem, UserError
from modelprep.family import Family, Quality
from modelprep.report import Measure, PrepReport, TensorSignature
from modelprep.request import PrepRequest


def gated(entries: list[Measure], baseline: float, quality: Quality, allowed: float) -> list[Measure]:
    """Each entry with its loss against the baseline and whether that loss is allowed."""
    out = []
    for entry in entries:
        loss = quality.loss(baseline, entry.accuracy)
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
            return round(
                math.log2(e.size_bytes / smallest) + math.log2(max(e.latency_p50_us, 1e-9) / quickest) + penalty, 4
            )

        scores = {e.name: score(e) for e in pool}
        entries = [e.model_copy(update={"balanced_score": scores[e.name]}) if e.name in scores else e for e in entries]
        best = min((e for e in entries if e.name in scores), key=lambda e: (scores[e.name], e.size_bytes, e.name))
        why = (
            f"best balance of size, latency and accuracy (score {scores[best.name]:.2f}: "
            f"log2 size ratio + log2 latency ratio + loss/allowed) among {len(pool)} passing candidates"
        )
    else:
        best = min(pool, key=lambda e: (e.size_bytes, e.gzip_bytes, e.latency_p50_us, e.name))
        why = f"smallest artifact ({best.size_bytes:,} bytes) among {len(pool)} passing candidates"
    return [e.model_copy(update={"chosen": e.name == best.name}) for e in entries], best.name, why


def miss_problems(
    entries: list[Measure],
    quality: Quality,
    allowed: float,
    baseline: float,
    label: str | None,
    where: str,
    gentle: tuple[str, ...],
    field: str = "optimize.max_accuracy_drop",
) -> list[Problem]:
    """One problem per candidate, located at the gate's field: how far it missed the gate (or why
    it could not be chosen)."""
    problems = []
    for e in entries:
        drop = e.accuracy_drop or 0.0
        loss = quality.loss_text(drop, baseline, e.accuracy, label)
        if e.passed_gate:
            problem = (
                f"{e.name} passes the gate ({loss}) but may not be chosen: {e.not_eligible_because or 'not eligible'}"
            )
            fix = "name it in optimize.variants to allow it"
        else:
            problem = (
                f"{e.name} {loss}, {quality.amount(drop - allowed)} more than the allowed {quality.amount(allowed)}"
            )
            fix = f"allow a larger drop, or try gentler variants ({', '.join(gentle)})"
        problems.append(Problem(where, field, problem, fix))
    return problems


def decide(
    req: PrepRequest,
    family: Family,
    key: str,
    model_sha256: str,
    evaluation_samples: int,
    baselines: list[Measure],
    entries: list[Measure],
    outputs: list[TensorSignature],
) -> PrepReport:
    """Gate every entry against the float model (the first baseline), choose one by the objective,
    and report; a UserError at the gate's line when nothing may be chosen."""
    o = req.optimize
    quality = family.metrics[o.metric.value]
    allowed = o.max_accuracy_drop
    reference = baselines[0].accuracy
    entries, chosen, why = choose(gated(entries, reference, quality, allowed), o.objective.value, allowed)
    if chosen is None:
        label = f"top-{o.top_k} accuracy" if o.metric.value == "top_k" else None
        raise UserError(
            miss_problems(
                entries,
                quality,
                allowed,
                reference,
                label,
                req.where(family.gate_field),
                family.gentle,
                family.gate_field,
            )
        )
    return PrepReport.of(
        key=key,
        metric=o.metric,
        top_k=o.top_k,
        objective=o.objective,
        max_accuracy_drop=allowed,
        baseline_accuracy=reference,
        model_sha256=model_sha256,
        threads=req.threads,
        inputs=signature(req),
        outputs=outputs,
        lower_is_better=quality.lower_is_better,
        evaluation_samples=evaluation_samples,
        baselines=gated(baselines, reference, quality, allowed),
        variants=entries,
        choice=why,
    )


def signature(req: PrepRequest) -> list[TensorSignature]:
    """The served inputs: each named input, or the one of a single-input model (a text has shape [])."""
    if req.inputs is not None:
        return [TensorSignature(name=n, shape=list(shape), dtype=dtype) for n, shape, dtype in req.inputs]
    return [TensorSignature(name=req.input_name, shape=list(req.sample_shape), dtype=req.input_dtype)]

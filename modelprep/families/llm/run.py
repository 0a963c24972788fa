"""Measure every candidate of a GGUF request, gate on optimize.max_kl (and min_agreement), choose by the
objective and report — the llm family's pass through the shared gate (`modelprep.select.choose`) and
the shared `PrepReport`, without the cache. `scripts`, benchmarks and tests call it directly; the
prep loop does the same steps with caching around them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from iac.spec.errors import Problem, UserError
from modelprep.families.llm import FAMILY, max_kl
from modelprep.report import InputSignature, Measure, Notes, PrepReport
from modelprep.request import PrepRequest


def gate(req: PrepRequest, entries: list[Measure]) -> list[Measure]:
    """Each entry with its KL as the loss against the source (whose KL is 0), passed or refused."""
    allowed = max_kl(req)
    out = []
    for e in entries:
        why = FAMILY.judge(req, e)
        out.append(e.model_copy(update={"accuracy_drop": e.accuracy, "passed_gate": e.accuracy <= allowed + 1e-12,
                                        "eligible": why is None and e.eligible, "not_eligible_because": why}))
    return out


def refusals(req: PrepRequest, entries: list[Measure]) -> list[Problem]:
    allowed = max_kl(req)
    where = req.where("optimize.max_kl")
    problems = []
    for e in entries:
        if not e.passed_gate:
            problems.append(Problem(where, "optimize.max_kl",
                                    f"{e.name} moves {e.accuracy:.4f} nats/token (mean KL) from the source, more than the "
                                    f"allowed {allowed}", "allow a larger max_kl, or try gentler variants "
                                    f"({', '.join(FAMILY.gentle)})"))
        elif not e.eligible:
            problems.append(Problem(req.where("optimize.min_agreement"), "optimize.min_agreement",
                                    f"{e.name}: {e.not_eligible_because}", "lower min_agreement, or try gentler variants"))
    return problems


def measure_and_choose(req: PrepRequest, progress: Callable[[str], None] = print) -> PrepReport:
    """Baseline, every candidate built and measured, the gate, the choice: the report."""
    from modelprep.select import choose

    session = FAMILY.session(req, None, progress, lambda *_: None)  # type: ignore[arg-type]
    baselines = session.baselines().measures
    variants = [c.variant for c in FAMILY.candidates(req)]
    entries: list[Measure] = []
    for variant, artifact, notes in session.build(variants):
        measured = session.measure(variant, artifact, notes, None).measure
        entries.append(measured.model_copy(update={"sha256": hashlib.sha256(artifact).hexdigest(),
                                                   "notes": Notes.model_validate(measured.notes.model_dump())}))
        progress(f"{variant.name}: {entries[-1].size_bytes:,} bytes, KL {entries[-1].accuracy:.4f}")
    entries, chosen, why = choose(gate(req, entries), req.optimize.objective.value, max_kl(req))
    if chosen is None:
        raise UserError(refusals(req, entries))
    return PrepReport.of(
        key="", metric=req.optimize.metric, top_k=req.optimize.top_k, objective=req.optimize.objective,
        max_accuracy_drop=max_kl(req), baseline_accuracy=0.0,
        model_sha256=hashlib.sha256(Path(req.model_path).read_bytes()).hexdigest(), threads=req.threads,
        input=InputSignature(name="prompt", shape=[], dtype="string"), evaluation_samples=session.evaluation_samples(),
        baselines=gate(req, baselines), variants=entries, choice=why,
    )

"""The prep stage end to end, for every model family: build, measure and gate every candidate,
choose one, cache the result.

From the model, the data and the optimize settings, the family (`modelprep.families`) builds
every candidate and measures it with the runtime that serves it; this loop gates them, chooses
one by the objective, and stores the result by content. One key scheme (`modelprep.request`),
one cache layout, one `measures.json` shape (a list of rows), one report and one chart serve
every family.

`prep_key` is cheap (it hashes bytes, runs no TensorFlow) so `pulumi preview` can show what would
change; `prep` does the work once per key. Every variant is also cached under its own content key
(its bytes, its measures, its evaluation outputs), so changing the objective or the gate
re-measures nothing, and only the result of a passing prep holds a deployable file with the
outputs prep measured for it (`outputs.npy`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from iac.spec.errors import UserError
from modelprep.cache import CANDIDATE_FILE, CHART, MEASURES, OUTPUTS, REPORT, Cache
from modelprep.families import family as family_named
from modelprep.family import Baselines, Candidate, Family, Progress, Session, Step, Variant
from modelprep.hashing import file_sha256
from modelprep.report import Measure, PrepReport, TensorSignature
from modelprep.request import PrepRequest, baseline_key, data_hashes, prep_key, variant_key

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class PrepResult:
    key: str
    artifact_path: Path
    report: PrepReport
    cached: bool

    @property
    def chart_path(self) -> Path:
        return self.artifact_path.parent / CHART

    @property
    def outputs_path(self) -> Path:
        """The chosen variant's outputs on the evaluation inputs, as prep measured them (.npy)."""
        return self.artifact_path.parent / OUTPUTS


def report_json(report: PrepReport) -> str:
    """The report as stored, printed by `modelstack prep --json` and passed to Pulumi."""
    return json.dumps(report.model_dump(mode="json", exclude_none=True), indent=2, sort_keys=True)


def cached_result(req: PrepRequest, cache: Cache | None = None) -> PrepResult | None:
    cache = cache or Cache()
    key = prep_key(req)
    entry = cache.get(key)
    if entry is None:
        return None
    report = PrepReport.model_validate_json((entry / REPORT).read_text())
    return PrepResult(key, entry / report.artifact_file, report, cached=True)


def check_pin(req: PrepRequest) -> None:
    if req.model_sha256 is None:
        return
    actual = file_sha256(req.model_path)
    if actual != req.model_sha256:
        raise UserError.single(
            req.where("model.sha256"),
            "model.sha256",
            f"the model's bytes hash to {actual}, not the pinned {req.model_sha256}",
            "point model.path at the pinned model, or update the pin if the new model is intended",
        )


def prep(
    req: PrepRequest, cache: Cache | None = None, progress: Progress = lambda _: None, step: Step | None = None
) -> PrepResult:
    """Return the cached result, or build, measure and gate every candidate, choose one, and
    cache. Raises UserError when no candidate passes the gate; then no result is cached
    (nothing deployable), though each measured variant is, for the next attempt."""
    from modelprep.select import decide

    cache = cache or Cache()
    hit = cached_result(req, cache)
    if hit is not None:
        progress(f"cache hit {hit.key[:12]}: nothing to build or measure")
        return hit
    key = prep_key(req)
    check_pin(req)
    family = family_named(req.family)
    work = _Work(req, family, cache, progress, step or (lambda *_: None))
    baselines, entries = work.run()
    outputs = work.output_signature(family.catalogue[entries[0].name])
    report = decide(
        req, family, key, work.hashes["model"] or "", work.session.evaluation_samples(), baselines, entries, outputs
    )
    ranges = family.input_ranges(req)
    if ranges:
        inputs = [
            t.model_copy(update={"range": list(ranges[t.name])}) if t.name in ranges else t for t in report.inputs
        ]
        report = report.model_copy(update={"inputs": inputs})
    chosen = work.entry(family.catalogue[report.variant])
    files = {
        **shipped_files(family, req, report.artifact_file, (chosen / CANDIDATE_FILE).read_bytes()),
        OUTPUTS: (chosen / OUTPUTS).read_bytes(),
        REPORT: report_json(report).encode(),
    }
    try:
        from modelprep.chart import chart_png

        files[CHART] = chart_png(report)
    except Exception as exc:  # a chart is a convenience; never fail a prep over it
        progress(f"no chart ({type(exc).__name__}: {exc})")
    entry = cache.put(key, files)
    progress(f"cached as {key[:12]}")
    return PrepResult(key, entry / report.artifact_file, report, cached=False)


def shipped_files(family: Family, req: PrepRequest, name: str, candidate: bytes) -> dict[str, bytes]:
    """The deployable artifact as the result entry holds it: the chosen candidate's bytes as the file
    `name`, or, for a family whose artifact is a folder (an optional `artifact_files(req, candidate)`
    naming every file of it, e.g. a model folder plus the variant's settings), those files under `name/`."""
    folder = getattr(family, "artifact_files", None)
    if folder is None:
        return {name: candidate}
    return {f"{name}/{relative}": content for relative, content in folder(req, candidate).items()}


class _Work:
    """One prep run: the baselines and every variant not cached yet, made and measured by the family."""

    def __init__(self, req: PrepRequest, family: Family, cache: Cache, progress: Progress, step: Step) -> None:
        self.req, self.family, self.cache, self.progress, self.step = req, family, cache, progress, step
        self.hashes = data_hashes(req)
        self.session: Session = family.session(req, cache, progress, self.step)

    def key(self, variant: Variant) -> str:
        return variant_key(self.req, variant, self.hashes, self.family.variant_settings(self.req, variant))

    def entry(self, variant: Variant) -> Path:
        entry = self.cache.get(self.key(variant))
        assert entry is not None, variant.name  # measured (and so stored) by run()
        return entry

    def output_signature(self, variant: Variant) -> list[TensorSignature]:
        """The served output, read from what a measured variant gave (every variant gives the same shape)."""
        import numpy as np

        from serving.v2 import OUTPUT_NAME

        shape = np.load(self.entry(variant) / OUTPUTS, mmap_mode="r").shape[1:]
        return [TensorSignature(name=OUTPUT_NAME, shape=[int(d) for d in shape], dtype="float32")]

    def baselines(self) -> Baselines:
        """The float model's rows (and its outputs when the family keeps them), cached by content."""
        import numpy as np

        from modelprep.measure import npy_bytes

        key = family_baseline_key(self.req, self.hashes, self.family)
        entry = self.cache.get(key)
        if entry is not None:
            outputs = np.load(entry / OUTPUTS) if (entry / OUTPUTS).is_file() else None
            return Baselines(_read_measures(entry), outputs)
        made = self.session.baselines()
        files = {MEASURES: _measures_json(made.measures).encode()}
        if made.outputs is not None:
            files[OUTPUTS] = npy_bytes(made.outputs)
        self.cache.put(key, files)
        return made

    def run(self) -> tuple[list[Measure], list[Measure]]:
        """(baselines: the float model and the family's reference variant, candidates in catalogue order)."""
        from modelprep.measure import npy_bytes

        cands = self.family.candidates(self.req)
        base = self.baselines()
        todo = [c.variant for c in cands]
        ref = self.family.reference
        if ref is not None and ref not in {v.name for v in todo}:
            todo.insert(0, self.family.catalogue[ref])  # the size and speed reference is always measured
        measured: dict[str, Measure] = {}
        for variant in todo:
            entry = self.cache.get(self.key(variant))
            if entry is not None:
                measured[variant.name] = _read_measures(entry)[0]
        missing = [v for v in todo if v.name not in measured]
        if missing:
            self.step("convert and evaluate", 0, len(missing))
        for done, (variant, artifact, notes) in enumerate(self.session.build(missing), 1):
            self.progress(f"evaluating {variant.name} ({variant.runtime})")
            made = self.session.measure(variant, artifact, notes, base.outputs)
            self.cache.put(
                self.key(variant),
                {
                    CANDIDATE_FILE: artifact,
                    OUTPUTS: npy_bytes(made.outputs),
                    MEASURES: _measures_json([made.measure]).encode(),
                },
            )
            measured[variant.name] = made.measure
            self.step("convert and evaluate", done, len(missing))
        entries = [self._judged(measured[c.variant.name], c) for c in cands]
        refs = [measured[ref].model_copy(update={"baseline": True})] if ref is not None else []
        return [*base.measures, *refs], entries

    def _judged(self, measure: Measure, candidate: Candidate) -> Measure:
        """The row with the candidate's eligibility, and the family's judgement of what it measured."""
        why = self.family.judge(self.req, measure) if candidate.eligible else candidate.reason
        return measure.model_copy(
            update={"eligible": candidate.eligible and why is None, "not_eligible_because": why or None}
        )


def variant_artifacts(req: PrepRequest, cache: Cache | None = None) -> dict[str, bytes]:
    """The bytes of every variant of the family that a prep of `req` measured (for benchmarks and comparisons)."""
    cache, family, hashes = cache or Cache(), family_named(req.family), data_hashes(req)
    out = {}
    for name, variant in family.catalogue.items():
        entry = cache.get(variant_key(req, variant, hashes, family.variant_settings(req, variant)))
        if entry is not None:
            out[name] = (entry / CANDIDATE_FILE).read_bytes()
    return out


def family_baseline_key(req: PrepRequest, hashes: dict[str, str | None], family: Family) -> str:
    """The baselines' cache key, with what the family says its measuring reads (optional
    `baseline_settings(req)`): without it a changed setting would re-measure the variants and keep
    the old baseline beside them."""
    hook = getattr(family, "baseline_settings", None)
    return baseline_key(req, hashes, family.baseline, hook(req) if hook is not None else None)


def baseline_outputs(req: PrepRequest, cache: Cache | None = None) -> np.ndarray | None:
    """The float model's outputs on the evaluation data, when its family keeps them (a prep of `req` stored them)."""
    import numpy as np

    cache = cache or Cache()
    entry = cache.get(family_baseline_key(req, data_hashes(req), family_named(req.family)))
    return None if entry is None or not (entry / OUTPUTS).is_file() else np.load(entry / OUTPUTS)


def _read_measures(entry: Path) -> list[Measure]:
    return [Measure.model_validate(m) for m in json.loads((entry / MEASURES).read_text())]


def _measures_json(measures: list[Measure]) -> str:
    return json.dumps([m.model_dump(mode="json", exclude_none=True) for m in measures])

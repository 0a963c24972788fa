"""The prep stage end to end: build, measure and gate every candidate, choose one, cache the result.

From the model, the data and the optimize settings, every candidate is built, measured with the
runtime that serves it, gated, one chosen by the objective, and the result stored by content.

`prep_key` (modelprep.request) is cheap (it hashes bytes, runs no TensorFlow) so `pulumi preview`
can show what would change; `prep` does the work once per key. Every variant is also cached under
its own content key (its bytes, its measures, its evaluation outputs), so changing the objective
or the gate re-measures nothing, and only the result of a passing prep holds a deployable file
(`model.tflite` / `model.onnx`) with the outputs prep measured for it (`outputs.npy`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from iac.spec.errors import UserError
from modelprep.build import Progress, Step
from modelprep.cache import Cache
from modelprep.hashing import file_sha256
from modelprep.report import Measure, PrepReport
from modelprep.request import PrepRequest, baseline_key, data_hashes, prep_key, variant_key
from modelprep.variants import CATALOG, Variant

REPORT = "report.json"
CHART = "report.png"
OUTPUTS = "outputs.npy"  # the evaluation outputs the chosen (or a candidate) variant gave, float32
CANDIDATE_FILE = "candidate.bin"  # a variant's bytes in its own entry: measured, not (yet) deployable
MEASURES = "measures.json"


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
            req.where("model.sha256"), "model.sha256", f"the model's bytes hash to {actual}, not the pinned {req.model_sha256}",
            "point model.path at the pinned model, or update the pin if the new model is intended",
        )


def prep(req: PrepRequest, cache: Cache | None = None, progress: Progress = lambda _: None,
         step: Step | None = None) -> PrepResult:
    """Return the cached result, or build, measure and gate every candidate, choose one, and
    cache. Raises UserError when no candidate passes the gate; then no result is cached
    (nothing deployable), though each measured variant is, for the next attempt."""
    from modelprep.select import decide

    cache = cache or Cache()
    if req.text is not None:  # a Hugging Face text model: its own room
        from modelprep.transformers.prep import prep_text

        return prep_text(req, cache, progress, step or (lambda *_: None))
    hit = cached_result(req, cache)
    if hit is not None:
        progress(f"cache hit {hit.key[:12]}: no TensorFlow work")
        return hit
    key = prep_key(req)
    check_pin(req)
    work = _Work(req, cache, progress, step or (lambda *_: None))
    baselines, entries = work.run()
    report = decide(req, key, work.hashes["model"] or "", work.evaluation_samples(), baselines, entries)
    chosen = report.chosen
    files = {
        report.artifact_file: work.candidate_file(chosen.name, CANDIDATE_FILE),
        OUTPUTS: work.candidate_file(chosen.name, OUTPUTS),
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


class _Work:
    """One prep run: loads the data and the model once (only when something must be made), then
    makes and measures each variant that is not cached yet."""

    def __init__(self, req: PrepRequest, cache: Cache, progress: Progress, step: Step) -> None:
        self.req, self.cache, self.progress, self.step = req, cache, progress, step
        self.hashes = data_hashes(req)
        self._onnx_float: dict[str, bytes] = {}
        self._loaded = False

    def load(self) -> None:
        if self._loaded:
            return
        from modelprep import convert
        from modelprep.data import load_npz

        r = self.req
        labels = "value" if r.optimize.metric.value == "mae" else "class"
        self.progress("loading data")
        if r.inputs is not None:  # several named inputs: one array per input name
            from modelprep.data import load_npz_inputs

            self.calibration = load_npz_inputs(r.calibration_path, "data.calibration", r.inputs, need_labels=False, labels=labels)
            self.evaluation = load_npz_inputs(r.evaluation_path, "data.evaluation", r.inputs, need_labels=True, labels=labels)
        else:
            self.calibration = load_npz(r.calibration_path, "data.calibration", r.sample_shape, need_labels=False, labels=labels)
            self.evaluation = load_npz(r.evaluation_path, "data.evaluation", r.sample_shape, need_labels=True, labels=labels)
        if r.fine_tuning_path and r.inputs is None:  # (fine-tuning variants are refused for several inputs)
            load_npz(r.fine_tuning_path, "optimize.fine_tuning_data", r.sample_shape, need_labels=False, labels=labels)
        self.progress("loading model")
        _pin_tf_threads(r.threads)
        self.model = convert.load_model(r.model_path)
        self._loaded = True

    def evaluation_samples(self) -> int:
        import numpy as np

        with np.load(self.req.evaluation_path, allow_pickle=False) as data:
            return int(len(data["x" if self.req.inputs is None else self.req.inputs[0][0]]))

    def run(self) -> tuple[list[Measure], list[Measure]]:
        """(baselines: Keras and the float32 LiteRT reference, candidates in catalog order)."""
        from modelprep.build import converted, fine_tuned
        from modelprep.measure import keras_baselines

        r = self.req
        cands = r.candidates()
        keras_key = baseline_key(r, self.hashes)
        keras = self._cached_measures(keras_key)
        if keras is None:
            self.load()
            assert self.evaluation.y is not None
            keras = keras_baselines(r, self.model, self.evaluation.x, self.evaluation.y, self.progress)
            self.cache.put(keras_key, {MEASURES: _measures_json(keras).encode()})
        todo: list[Variant] = [c.variant for c in cands]
        if "litert-float32" not in {v.name for v in todo}:
            todo.insert(0, CATALOG["litert-float32"])  # the reference is always measured
        measured: dict[str, Measure] = {}
        missing: list[Variant] = []
        for variant in todo:
            hit = self._cached_measures(variant_key(r, variant, self.hashes))
            if hit is not None:
                measured[variant.name] = hit[0]
            else:
                missing.append(variant)
        total, done = len(missing), 0
        if total:
            self.step("convert and evaluate", 0, total)
        for variant in [v for v in missing if not v.needs_fine_tuning]:
            self.load()
            artifact, notes = converted(r, self.model, self.calibration.x, variant, self._onnx_float, self.progress)
            measured[variant.name] = self._store(variant, artifact, notes)
            done += 1
            self.step("convert and evaluate", done, total)
        tuned = [v for v in missing if v.needs_fine_tuning]
        if tuned:
            self.load()
            made = fine_tuned(r, self.model, tuned, self.progress, self.step)
            for variant in tuned:
                measured[variant.name] = self._store(variant, *made[variant.name])
                done += 1
                self.step("convert and evaluate", done, total)

        reference = measured["litert-float32"].model_copy(update={"baseline": True})
        entries = [
            measured[c.variant.name].model_copy(update={"eligible": c.eligible, "not_eligible_because": c.reason or None})
            for c in cands
        ]
        return [*keras, reference], entries

    def _store(self, variant: Variant, artifact: bytes, notes: dict[str, Any]) -> Measure:
        from modelprep.measure import measure_variant, npy_bytes

        self.progress(f"evaluating {variant.name} ({variant.runtime})")
        assert self.evaluation.y is not None
        made = measure_variant(self.req, variant, artifact, notes, self.evaluation.x, self.evaluation.y)
        self.cache.put(variant_key(self.req, variant, self.hashes), {
            CANDIDATE_FILE: artifact, OUTPUTS: npy_bytes(made.outputs), MEASURES: _measures_json([made.measure]).encode(),
        })
        return made.measure

    def _cached_measures(self, key: str) -> list[Measure] | None:
        entry = self.cache.get(key)
        if entry is None:
            return None
        return [Measure.model_validate(m) for m in json.loads((entry / MEASURES).read_text())]

    def candidate_file(self, name: str, file: str) -> bytes:
        entry = self.cache.get(variant_key(self.req, CATALOG[name], self.hashes))
        assert entry is not None, name
        return (entry / file).read_bytes()


def _measures_json(measures: list[Measure]) -> str:
    return json.dumps([m.model_dump(mode="json", exclude_none=True) for m in measures])


def _pin_tf_threads(threads: int) -> None:
    from modelprep.tf_env import tensorflow

    tf = tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started (an earlier prep in this process)
        pass

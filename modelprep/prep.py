"""The prep stage: model + data + optimize settings → every candidate variant built, measured
with the runtime that serves it, gated on accuracy, and one chosen by the objective.

`prep_key` is cheap (it hashes bytes, runs no TensorFlow) so `pulumi preview` can show what
would change; `prep` does the work once per key. Every variant is also cached under its own
content key, so changing the objective or the gate re-measures nothing, and only the result
of a passing prep holds a deployable file (`model.tflite` / `model.onnx`).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelprep.cache import Cache
from iac.spec.errors import Problem, UserError
from modelprep.hashing import file_sha256, json_sha256
from modelprep.variants import CATALOG, Candidate, Variant, candidates

# Bump when conversion or evaluation changes, so cached artifacts are rebuilt.
PREP_VERSION = 2
ARTIFACT = "model.tflite"
REPORT = "report.json"
CHART = "report.png"
CANDIDATE_FILE = "candidate.bin"  # a variant's bytes in its own entry: measured, not (yet) deployable
MEASURES = "measures.json"
OBJECTIVES = ("smallest", "fastest", "balanced")
PRUNING_DEFAULTS = {"target_sparsity": 0.8, "schedule": "polynomial", "begin_step": 0, "end_step": None, "frequency": 10, "epochs": 2}
CLUSTERING_DEFAULTS = {"clusters": 16, "epochs": 1}
QAT_DEFAULTS = {"epochs": 1}

Progress = Callable[[str], None]
Step = Callable[[str, int, int], None]  # (task, done, total): drives progress bars


@dataclass(frozen=True)
class PrepRequest:
    model_path: str
    model_sha256: str | None
    calibration_path: str
    evaluation_path: str
    input_name: str
    sample_shape: tuple[int, ...]
    quantization: str | None = None  # the first spec form: exactly litert-<quantization>
    max_accuracy_drop: float = 0.01
    objective: str = "smallest"
    metric: str = "accuracy"
    top_k: int = 5
    variants: tuple[str, ...] | None = None
    int8_io: bool = False
    pruning: dict[str, Any] | None = None
    clustering: dict[str, Any] | None = None
    qat: dict[str, Any] | None = None
    fine_tuning_path: str | None = None  # .npz x (and y); default: calibration x, distilled
    threads: int = 1
    all_variants: bool = False
    latency_budget_s: float = 0.4  # time per latency loop; not part of any key

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrepRequest:
        """Rebuild from JSON-ish data (Pulumi state turns ints into floats, tuples into lists,
        and drops None values)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        values.setdefault("model_sha256", None)
        values["sample_shape"] = tuple(int(d) for d in values["sample_shape"])
        if values.get("variants") is not None:
            values["variants"] = tuple(values["variants"])
        for key in ("top_k", "threads"):
            if key in values:
                values[key] = int(values[key])
        for key in ("pruning", "clustering", "qat"):
            if values.get(key) is not None:
                values[key] = _canon(dict(values[key]))
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return _canon(asdict(self))


@dataclass(frozen=True)
class PrepResult:
    key: str
    artifact_path: Path
    report: dict[str, Any]
    cached: bool

    @property
    def chart_path(self) -> Path:
        return self.artifact_path.parent / CHART


def _canon(value: Any) -> Any:
    """JSON-stable form: tuples as lists, integral floats as ints (1.0 and 1 hash alike), and
    no None values (Pulumi drops them; a missing field means its default)."""
    if isinstance(value, dict):
        return {k: _canon(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_canon(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _settings(req: PrepRequest) -> dict[str, Any]:
    skip = {"latency_budget_s"}
    return _canon({k: v for k, v in asdict(req).items() if not k.endswith("_path") and k not in skip})


def prep_key(req: PrepRequest) -> str:
    """Content address of the result: the bytes of every input plus the settings."""
    return json_sha256(
        {
            "version": PREP_VERSION,
            "model": file_sha256(req.model_path),
            "calibration": file_sha256(req.calibration_path),
            "evaluation": file_sha256(req.evaluation_path),
            "fine_tuning": file_sha256(req.fine_tuning_path) if req.fine_tuning_path else None,
            "settings": _settings(req),
        }
    )


def request_candidates(req: PrepRequest) -> list[Candidate]:
    return candidates(
        req.variants, req.quantization, req.int8_io, req.pruning is not None, req.clustering is not None,
        req.qat is not None, req.all_variants,
    )


def cached_result(req: PrepRequest, cache: Cache | None = None) -> PrepResult | None:
    cache = cache or Cache()
    key = prep_key(req)
    entry = cache.get(key)
    if entry is None:
        return None
    report = json.loads((entry / REPORT).read_text())
    return PrepResult(key, entry / report.get("artifact_file", ARTIFACT), report, cached=True)


def check_pin(req: PrepRequest) -> None:
    if req.model_sha256 is None:
        return
    actual = file_sha256(req.model_path)
    if actual != req.model_sha256:
        raise UserError.single(
            "model.yaml", "model.sha256", f"the model's bytes hash to {actual}, not the pinned {req.model_sha256}",
            "point model.path at the pinned model, or update the pin if the new model is intended",
        )


# ------------------------------------------------------------------------------------ prep
def prep(req: PrepRequest, cache: Cache | None = None, progress: Progress = lambda _: None,
         step: Step | None = None) -> PrepResult:
    """Return the cached result, or build, measure and gate every candidate, choose one, and
    cache. Raises UserError when no candidate passes the gate; then no result is cached
    (nothing deployable), though each measured variant is, for the next attempt."""
    cache = cache or Cache()
    hit = cached_result(req, cache)
    if hit is not None:
        progress(f"cache hit {hit.key[:12]}: no TensorFlow work")
        return hit
    key = prep_key(req)
    check_pin(req)
    _check_request(req)
    work = _Work(req, cache, progress, step or (lambda *_: None))
    baselines, entries = work.run()
    report = build_report(req, key, baselines, entries)
    gate(report)
    chosen = next(e for e in entries if e["chosen"])
    artifact = work.artifact_bytes(chosen["name"])
    files = {chosen["artifact_file"]: artifact, REPORT: json.dumps(report, indent=2, sort_keys=True).encode()}
    try:
        from modelprep.chart import chart_png

        files[CHART] = chart_png(report)
    except Exception as exc:  # a chart is a convenience; never fail a prep over it
        progress(f"no chart ({type(exc).__name__}: {exc})")
    entry = cache.put(key, files)
    progress(f"cached as {key[:12]}")
    return PrepResult(key, entry / chosen["artifact_file"], report, cached=False)


def _check_request(req: PrepRequest) -> None:
    problems = []
    if req.objective not in OBJECTIVES:
        problems.append(Problem("model.yaml", "optimize.objective", f"{req.objective!r} is not supported", f"use one of {', '.join(OBJECTIVES)}"))
    for name in req.variants or ():
        if name not in CATALOG:
            problems.append(Problem("model.yaml", "optimize.variants", f"{name!r} is not a variant", f"use some of {', '.join(CATALOG)}"))
    if req.metric not in ("accuracy", "top_k", "mae"):
        problems.append(Problem("model.yaml", "optimize.metric", f"{req.metric!r} is not supported", "use one of accuracy, top_k, mae"))
    if problems:
        raise UserError(problems)


class _Work:
    """One prep run: loads the data and the model once, then makes each missing variant."""

    def __init__(self, req: PrepRequest, cache: Cache, progress: Progress, step: Step) -> None:
        self.req, self.cache, self.progress, self.step = req, cache, progress, step
        self.hashes = {
            "model": file_sha256(req.model_path),
            "calibration": file_sha256(req.calibration_path),
            "evaluation": file_sha256(req.evaluation_path),
            "fine_tuning": file_sha256(req.fine_tuning_path) if req.fine_tuning_path else None,
        }
        self._artifacts: dict[str, bytes] = {}
        self._loaded = False

    # -- keys -------------------------------------------------------------------------------
    def variant_key(self, variant: Variant) -> str:
        r = self.req
        settings: dict[str, Any] = {"quantization": variant.quantization, "int8_io": variant.name == "litert-int8-io"}
        if variant.technique == "pruned":
            settings["pruning"] = {**PRUNING_DEFAULTS, **(r.pruning or {})}
        elif variant.technique == "clustered":
            settings["clustering"] = {**CLUSTERING_DEFAULTS, **(r.clustering or {})}
        elif variant.technique == "qat":
            settings["qat"] = {**QAT_DEFAULTS, **(r.qat or {})}
        return json_sha256({
            "version": PREP_VERSION, "variant": variant.name, "data": self.hashes if variant.needs_fine_tuning
            else {k: v for k, v in self.hashes.items() if k != "fine_tuning"},
            "settings": _canon(settings), "metric": r.metric, "top_k": r.top_k if r.metric == "top_k" else None,
            "threads": r.threads, "input": [r.input_name, list(r.sample_shape)],
        })

    # -- loading ----------------------------------------------------------------------------
    def load(self) -> None:
        if self._loaded:
            return
        from modelprep import convert
        from modelprep.data import load_npz

        r = self.req
        labels = "value" if r.metric == "mae" else "class"
        self.progress("loading data")
        self.calibration = load_npz(r.calibration_path, "data.calibration", r.sample_shape, need_labels=False, labels=labels)
        self.evaluation = load_npz(r.evaluation_path, "data.evaluation", r.sample_shape, need_labels=True, labels=labels)
        if r.fine_tuning_path:
            load_npz(r.fine_tuning_path, "optimize.fine_tuning_data", r.sample_shape, need_labels=False, labels=labels)
        self.progress("loading model")
        _pin_tf_threads(r.threads)
        self.model = convert.load_model(r.model_path)
        self._loaded = True

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        r = self.req
        cands = request_candidates(r)
        baseline_key = json_sha256({"version": PREP_VERSION, "baseline": "keras", "model": self.hashes["model"],
                                    "evaluation": self.hashes["evaluation"], "metric": r.metric,
                                    "top_k": r.top_k if r.metric == "top_k" else None, "threads": r.threads})
        keras_entries = self._cached_measures(baseline_key)
        if keras_entries is None:
            self.load()
            keras_entries = self._measure_keras()
            self.cache.put(baseline_key, {MEASURES: json.dumps(keras_entries).encode()})
        todo: list[Variant] = [c.variant for c in cands]
        if "litert-float32" not in {v.name for v in todo}:
            todo.insert(0, CATALOG["litert-float32"])  # the reference is always measured
        measured: dict[str, dict[str, Any]] = {}
        missing: list[Variant] = []
        for variant in todo:
            hit = self._cached_measures(self.variant_key(variant))
            if hit is not None:
                measured[variant.name] = hit
            else:
                missing.append(variant)
        total, done = len(missing), 0
        if total:
            self.step("convert and evaluate", 0, total)
        for variant in [v for v in missing if not v.needs_fine_tuning]:
            measured[variant.name] = self._make(variant)
            done += 1
            self.step("convert and evaluate", done, total)
        tuned = [v for v in missing if v.needs_fine_tuning]
        if tuned:
            self.load()
            made = self._fine_tune(tuned)
            for variant in tuned:
                measured[variant.name] = self._store(variant, made[variant.name]["artifact"], made[variant.name]["notes"])
                done += 1
                self.step("convert and evaluate", done, total)

        reference = measured["litert-float32"]
        baselines = [*keras_entries, {**reference, "name": "litert-float32", "chosen": False, "baseline": True}]
        entries = []
        for cand in cands:
            entry = dict(measured[cand.variant.name])
            entry["eligible"] = cand.eligible
            if cand.reason:
                entry["not_eligible_because"] = cand.reason
            entries.append(entry)
        return baselines, entries

    def _cached_measures(self, key: str) -> Any:
        entry = self.cache.get(key)
        return None if entry is None else json.loads((entry / MEASURES).read_text())

    def artifact_bytes(self, name: str) -> bytes:
        if name not in self._artifacts:
            entry = self.cache.get(self.variant_key(CATALOG[name]))
            assert entry is not None, name
            self._artifacts[name] = (entry / CANDIDATE_FILE).read_bytes()
        return self._artifacts[name]

    # -- making variants ----------------------------------------------------------------------
    def _make(self, variant: Variant) -> dict[str, Any]:
        from modelprep import convert

        self.load()
        self.progress(f"converting {variant.name}")
        notes: dict[str, Any] = {}
        if variant.runtime == "litert":
            converted = convert.convert_litert(
                self.model if not Path(self.req.model_path).is_dir() else self.req.model_path,
                variant.quantization, self.calibration.x, int8_io=variant.name == "litert-int8-io",
            )
            artifact, notes = converted.artifact, converted.notes
            if notes.get("int8_fallback"):
                self.progress(f"{variant.name}: {notes['int8_fallback']}")
        else:
            if "onnx-float32" not in self._artifacts:
                self._artifacts["onnx-float32"] = convert.to_onnx(self.model, self.req.sample_shape, self.req.input_name)
            artifact = self._artifacts["onnx-float32"]
            if variant.quantization != "none":
                artifact = convert.onnx_quantize(artifact, variant.quantization, self.calibration.x)
        return self._store(variant, artifact, notes)

    def _store(self, variant: Variant, artifact: bytes, notes: dict[str, Any]) -> dict[str, Any]:
        self.progress(f"evaluating {variant.name} ({variant.runtime})")
        entry = self._measure(variant, artifact, notes)
        self._artifacts[variant.name] = artifact
        self.cache.put(self.variant_key(variant), {CANDIDATE_FILE: artifact, MEASURES: json.dumps(entry).encode()})
        return entry

    def _measure(self, variant: Variant, artifact: bytes, notes: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        from modelprep import evaluate

        r = self.req
        runner = evaluate.runner_for(variant.runtime, artifact, r.threads)
        x, y = self.evaluation.x, self.evaluation.y
        assert y is not None
        outputs = np.concatenate([runner(x[i : i + evaluate.BATCH]) for i in range(0, len(x), evaluate.BATCH)])
        value = evaluate.score(r.metric, outputs, y, r.top_k)
        batch_runner = evaluate.runner_for(variant.runtime, artifact, r.threads)  # its own tensor shapes
        latency = evaluate.measure(runner.prepared(_samples(x, 1)), batch_runner.prepared(_samples(x, evaluate.THROUGHPUT_BATCH)),
                                   budget_s=r.latency_budget_s)
        return {
            "name": variant.name, "runtime": variant.runtime, "technique": variant.technique,
            "quantization": variant.quantization, "artifact_file": variant.artifact_file,
            "sha256": hashlib.sha256(artifact).hexdigest(), "size_bytes": len(artifact), "gzip_bytes": _gzip_len(artifact),
            "metric": r.metric, "accuracy": round(value, 6),
            "latency_p50_us": latency.p50_us, "latency_p99_us": latency.p99_us,
            "throughput_per_s": latency.throughput_per_s, "latency_calls": latency.calls,
            "threads": r.threads, "notes": notes, "chosen": False,
        }

    def _measure_keras(self) -> list[dict[str, Any]]:
        import numpy as np

        from modelprep import evaluate

        r = self.req
        self.progress("evaluating the float baseline (Keras)")
        x, y = self.evaluation.x, self.evaluation.y
        assert y is not None
        value = round(evaluate.score(r.metric, evaluate.keras_predict(self.model, x), y, r.top_k), 6)
        size = _path_bytes(r.model_path)
        one, batch = _samples(x, 1), _samples(x, evaluate.THROUGHPUT_BATCH)
        entries = []
        predict = getattr(self.model, "predict", None)
        timings = []
        if predict is not None:
            self.progress("timing Keras model.predict")
            timings.append(("keras-predict", "Keras model.predict, one sample a call",
                            evaluate.measure(lambda: predict(one, verbose=0), lambda: predict(batch, verbose=0),
                                             budget_s=r.latency_budget_s * 2, min_calls=5, max_calls=400)))
        self.progress("timing a direct Keras call")
        timings.append(("keras-call", "Keras model(x), one sample a call",
                        evaluate.measure(lambda: np.asarray(evaluate._first(self.model(one, training=False))),
                                         lambda: np.asarray(evaluate._first(self.model(batch, training=False))),
                                         budget_s=r.latency_budget_s, min_calls=10, max_calls=2000)))
        for name, description, latency in timings:
            entries.append({
                "name": name, "runtime": "keras", "technique": "baseline", "quantization": "none",
                "description": description, "size_bytes": size["bytes"], "gzip_bytes": size["gzip"],
                "metric": r.metric, "accuracy": value, "latency_p50_us": latency.p50_us,
                "latency_p99_us": latency.p99_us, "throughput_per_s": latency.throughput_per_s,
                "latency_calls": latency.calls, "threads": r.threads, "chosen": False, "baseline": True,
            })
        return entries

    def _fine_tune(self, variants: list[Variant]) -> dict[str, dict[str, Any]]:
        from modelprep import keras_bridge

        r = self.req
        keras_bridge.check_convertible(self.model, where=r.model_path)
        techniques: dict[str, dict[str, Any]] = {}
        for variant in variants:
            t = variant.technique
            if t not in techniques:
                defaults = {"pruned": PRUNING_DEFAULTS, "clustered": CLUSTERING_DEFAULTS, "qat": QAT_DEFAULTS}[t]
                given = {"pruned": r.pruning, "clustered": r.clustering, "qat": r.qat}[t] or {}
                techniques[t] = {"name": t, **defaults, **given, "quantizations": []}
            techniques[t]["quantizations"].append(variant.quantization)
        with tempfile.TemporaryDirectory(prefix="modelprep-tfmot-") as tmp:
            job = {
                "model_path": r.model_path, "calibration_path": r.calibration_path,
                "train_path": r.fine_tuning_path or r.calibration_path, "metric": r.metric,
                "out_dir": str(Path(tmp) / "out"), "techniques": list(techniques.values()),
            }
            job_path = Path(tmp) / "job.json"
            job_path.write_text(json.dumps(_canon(job)))
            if not r.fine_tuning_path:
                self.progress("fine-tuning on the calibration inputs, distilled from the float model "
                              "(set optimize.fine_tuning_data for labelled data)")
            outputs = run_worker(job_path, Path(tmp) / "stderr.txt", self.progress, self.step)
            return {
                f"{name}-{'float32' if q == 'none' else q}": {"artifact": Path(o["path"]).read_bytes(), "notes": o["notes"]}
                for key, o in outputs.items() for name, q in [key.split("-", 1)]
            }


def run_worker(job_path: Path, stderr_path: Path, progress: Progress, step: Step) -> dict[str, Any]:
    """Run modelprep.tfmot_worker and relay its events; its UserErrors become ours."""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    with stderr_path.open("w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "modelprep.tfmot_worker", str(job_path)],
                                stdout=subprocess.PIPE, stderr=stderr, text=True, env=env)
        assert proc.stdout is not None
        result: dict[str, Any] | None = None
        problems: list[dict[str, str]] = []
        for line in proc.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event["event"] == "progress":
                progress(f"{event['technique']}: {event['stage']} ({event['done']}/{event['total']} epochs)")
                step(f"fine-tune {event['technique']}", int(event["done"]), int(event["total"]))
            elif event["event"] == "done":
                result = event["outputs"]
            elif event["event"] == "error":
                problems = event["problems"]
        code = proc.wait()
    if problems:
        raise UserError([Problem(**p) for p in problems])
    if code != 0 or result is None:
        tail = stderr_path.read_text()[-2000:]
        raise RuntimeError(f"the tfmot worker failed (exit {code}):\n{tail}")
    return result


def _pin_tf_threads(threads: int) -> None:
    from modelprep.tf_env import tensorflow

    tf = tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started (an earlier prep in this process)
        pass


def _samples(x: Any, n: int) -> Any:
    import numpy as np

    reps = int(np.ceil(n / len(x)))
    return np.concatenate([x] * reps)[:n] if reps > 1 else x[:n]


def _gzip_len(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def _path_bytes(path: str) -> dict[str, int]:
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    data = b"".join(f.read_bytes() for f in files)
    return {"bytes": len(data), "gzip": _gzip_len(data)}


# ------------------------------------------------------------------------------ the choice
def build_report(req: PrepRequest, key: str, baselines: list[dict[str, Any]], entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Gate every entry, choose one by the objective, and describe the result. The top-level
    fields describe the chosen variant (what render and the Pulumi resource read)."""
    from modelprep.select import choose, mark_gate

    keras = baselines[0]
    mark_gate(entries, keras["accuracy"], req.metric, req.max_accuracy_drop)
    mark_gate(baselines, keras["accuracy"], req.metric, req.max_accuracy_drop)
    chosen, why = choose(entries, req.objective, req.max_accuracy_drop)
    report: dict[str, Any] = {
        "key": key,
        "metric": req.metric,
        "top_k": req.top_k if req.metric == "top_k" else None,
        "objective": req.objective,
        "max_accuracy_drop": req.max_accuracy_drop,
        "baseline_accuracy": keras["accuracy"],
        "model_sha256": file_sha256(req.model_path),
        "threads": req.threads,
        "input": {"name": req.input_name, "shape": list(req.sample_shape), "dtype": "float32"},
        "evaluation_samples": None,
        "baselines": baselines,
        "variants": entries,
        "choice": why,
    }
    try:
        import numpy as np

        with np.load(req.evaluation_path) as data:
            report["evaluation_samples"] = int(len(data["x"]))
    except Exception:  # already validated by the run; a report never fails over a count
        pass
    if chosen is not None:
        chosen["chosen"] = True
        report.update({
            "variant": chosen["name"], "runtime": chosen["runtime"], "quantization": chosen["quantization"],
            "artifact_file": chosen["artifact_file"], "artifact_sha256": chosen["sha256"],
            "size_bytes": chosen["size_bytes"], "gzip_bytes": chosen["gzip_bytes"], "accuracy": chosen["accuracy"],
            "accuracy_drop": chosen["accuracy_drop"], "latency_p50_us": chosen["latency_p50_us"],
            "latency_p99_us": chosen["latency_p99_us"], "throughput_per_s": chosen["throughput_per_s"],
        })
    return report


def gate(report: dict[str, Any]) -> None:
    """Raise when nothing was chosen: one problem per candidate, saying by how much it missed."""
    if report.get("variant"):
        return
    from modelprep.select import miss_problems

    raise UserError(miss_problems(report))

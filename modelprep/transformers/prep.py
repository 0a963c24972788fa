"""Prep for Hugging Face text models: export once, make the float32 / int8 per-channel / float16 ONNX variants,
measure each through serving's `TextModel`, gate, choose, and cache — the same report, cache and chart as Keras models.

The baseline is the TensorFlow model the weights were loaded into (what the ONNX graphs are
compared with): metric `cosine` is each variant's mean cosine to its embeddings (the minimum is
kept in the variant's notes and gated by `optimize.min_cosine`), metric `accuracy` scores labelled
texts.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from iac.spec.errors import UserError
from modelprep.cache import Cache
from modelprep.hashing import json_sha256
from modelprep.report import InputSignature, Measure, Notes, PrepReport
from modelprep.request import PrepRequest, data_hashes, prep_key
from modelprep.transformers.folder import Folder, open_folder, read_texts

TEXT_PREP_VERSION = 1
VARIANTS = {
    "onnx-float32": ("none", "ONNX (TensorFlow → tf2onnx, ORT BERT fusion), float32"),
    "onnx-dynamic": ("dynamic", "ONNX Runtime dynamic int8, per-channel weights, after fusion"),
    "onnx-float16": ("float16", "ONNX float16 weights and activations, float32 inputs and outputs"),
}
DEFAULT_VARIANTS = tuple(VARIANTS)
ARTIFACT = "model.onnx"
EXPORT_FILE = "export.onnx"
THROUGHPUT_BATCH = 32
SHORT_TOKENS = 16  # the single-sample latency is timed on a text of about this many tokens


def variant_names(req: PrepRequest) -> list[str]:
    o = req.optimize
    names = [v.value for v in o.variants] if o.variants is not None else list(DEFAULT_VARIANTS)
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise UserError.single(req.where("optimize.variants"), "optimize.variants",
                               f"{', '.join(unknown)} cannot be made from a Hugging Face model",
                               f"use some of {', '.join(VARIANTS)}")
    return names


def _keys(req: PrepRequest, hashes: dict[str, Any]) -> dict[str, str]:
    assert req.text is not None
    base = {"version": TEXT_PREP_VERSION, "model": hashes["model"], "text": req.text.model_dump(mode="json")}
    measured = {**base, "evaluation": hashes["evaluation"], "metric": req.optimize.metric.value,
                "threads": req.threads}
    return {
        "export": json_sha256({**base, "export": True}),
        "baseline": json_sha256({**measured, "baseline": "tensorflow"}),
        **{name: json_sha256({**measured, "variant": name}) for name in VARIANTS},
    }


def prep_text(req: PrepRequest, cache: Cache, progress: Any, step: Any) -> Any:
    from modelprep.prep import CANDIDATE_FILE, CHART, MEASURES, OUTPUTS, REPORT, PrepResult, cached_result, check_pin, report_json
    from modelprep.select import choose, gated, miss_problems

    hit = cached_result(req, cache)
    if hit is not None:
        progress(f"cache hit {hit.key[:12]}: no TensorFlow work")
        return hit
    assert req.text is not None
    key = prep_key(req)
    check_pin(req)
    names = variant_names(req)
    folder = open_folder(req.model_path)
    labels = _labels(req, folder)
    classify = req.text.task == "text-classification"
    texts, y = read_texts(req.evaluation_path, need_labels=classify, labels=labels)
    hashes = data_hashes(req)
    keys = _keys(req, hashes)
    o = req.optimize
    metric = o.metric.value

    work = _Lazy(folder, classify)
    baseline_entry = cache.get(keys["baseline"])
    if baseline_entry is None:
        progress("loading the model into TensorFlow (no PyTorch)")
        reference = work.reference(texts, req)
        value = _score(metric, reference, reference, y)
        latency = work.time_tf(texts, req)
        baseline = Measure(
            name="tensorflow", runtime="tensorflow", technique="baseline", quantization="none",
            description="transformers' TFBertModel with the folder's weights, pooling in the same function",
            size_bytes=_folder_bytes(folder.path), gzip_bytes=_folder_bytes(folder.path), metric=o.metric,
            accuracy=round(value, 6), latency_p50_us=latency[0], latency_p99_us=latency[1],
            throughput_per_s=latency[2], latency_calls=latency[3], threads=req.threads, baseline=True,
        )
        cache.put(keys["baseline"], {MEASURES: baseline.model_dump_json().encode(), OUTPUTS: _npy(reference)})
    else:
        baseline = Measure.model_validate_json((baseline_entry / MEASURES).read_text())
        reference = np.load(baseline_entry / OUTPUTS)

    settings = _settings(req, labels, classify)
    entries: list[Measure] = []
    files: dict[str, tuple[bytes, bytes]] = {}
    step("convert and evaluate", 0, len(names))
    for done, name in enumerate(names, 1):
        entry = cache.get(keys[name])
        if entry is None:
            artifact, notes = _make(name, work, cache, keys["export"], settings, progress)
            progress(f"evaluating {name} (onnx)")
            measure, outputs = _measure(req, name, artifact, notes, texts, reference, y)
            cache.put(keys[name], {CANDIDATE_FILE: artifact, MEASURES: measure.model_dump_json().encode(), OUTPUTS: _npy(outputs)})
            entry = cache.get(keys[name])
        assert entry is not None
        measure = Measure.model_validate_json((entry / MEASURES).read_text())
        if o.min_cosine is not None and metric == "cosine" and (measure.notes.cosine_min or 0.0) < o.min_cosine:
            measure = measure.model_copy(update={"eligible": False, "not_eligible_because":
                                                 f"min cosine {measure.notes.cosine_min:.4f} is below optimize.min_cosine {o.min_cosine}"})
        entries.append(measure)
        files[name] = ((entry / CANDIDATE_FILE).read_bytes(), (entry / OUTPUTS).read_bytes())
        step("convert and evaluate", done, len(names))

    allowed = o.max_accuracy_drop
    entries, chosen, why = choose(gated(entries, baseline.accuracy, metric, allowed), o.objective.value, allowed)
    if chosen is None:
        raise UserError(miss_problems(entries, metric, allowed, baseline.accuracy, o.top_k, req.where("optimize.max_accuracy_drop")))
    report = PrepReport.of(
        key=key, metric=o.metric, top_k=o.top_k, objective=o.objective, max_accuracy_drop=allowed,
        baseline_accuracy=baseline.accuracy, model_sha256=hashes["model"] or "", threads=req.threads,
        input=InputSignature(name=req.input_name, shape=[], dtype="string"), evaluation_samples=len(texts),
        baselines=gated([baseline], baseline.accuracy, metric, allowed), variants=entries, choice=why,
    )
    artifact, outputs = files[report.variant]
    out = {report.artifact_file: artifact, OUTPUTS: outputs, REPORT: report_json(report).encode()}
    try:
        from modelprep.chart import chart_png

        out[CHART] = chart_png(report)
    except Exception as exc:  # a chart is a convenience; never fail a prep over it
        progress(f"no chart ({type(exc).__name__}: {exc})")
    entry = cache.put(key, out)
    progress(f"cached as {key[:12]}")
    return PrepResult(key, entry / report.artifact_file, report, cached=False)


def _labels(req: PrepRequest, folder: Folder) -> list[str] | None:
    assert req.text is not None
    if req.text.task != "text-classification":
        return None
    labels = list(req.text.labels) if req.text.labels else folder.labels()
    if not labels:
        raise UserError.single(req.where("model.labels"), "model.labels", "the model's config.json has no id2label",
                               "list the class names in model.labels, in output order")
    head = folder.weights().get("classifier.weight")
    if head is not None and head.shape[0] != len(labels):
        raise UserError.single(req.where("model.labels"), "model.labels",
                               f"{len(labels)} labels for a classifier with {head.shape[0]} outputs",
                               "list one name per class, in output order")
    return labels


def _settings(req: PrepRequest, labels: list[str] | None, classify: bool) -> Any:
    from serving.text import TextSettings

    assert req.text is not None
    return TextSettings(task=req.text.task, max_length=req.text.max_length, truncation=req.text.truncation,
                        labels=tuple(labels or ()), output="probabilities" if classify else "sentence_embedding")


class _Lazy:
    """The TensorFlow model and the exported graph, made only when something is not cached."""

    def __init__(self, folder: Folder, classify: bool) -> None:
        self.folder, self.classify = folder, classify
        self._function: Any = None

    def function(self) -> Any:
        if self._function is None:
            from modelprep.transformers import export

            model, head = export.load_tf_bert(self.folder)
            pooling, normalize = self.folder.pooling()
            if self.classify and not (self.folder.path / "1_Pooling").is_dir():
                pooling, normalize = "pooler", False
            self._function = export.text_function(model, head, pooling, normalize, self.classify)
        return self._function

    def tokenizer(self, max_length: int) -> Any:
        from serving.text import TextTokenizer

        return TextTokenizer((self.folder.path / "tokenizer.json").read_text(), max_length, "truncate")

    def reference(self, texts: list[str], req: PrepRequest) -> np.ndarray:
        assert req.text is not None
        return run_grouped(texts, self.tokenizer(req.text.max_length), lambda ids, mask: self.function()(ids, mask).numpy())

    def time_tf(self, texts: list[str], req: PrepRequest) -> tuple[float, float, float, int]:
        from modelprep import evaluate
        from serving.text import pad

        assert req.text is not None
        tok = self.tokenizer(req.text.max_length)
        one = pad(tok.encode([short_text(texts, tok)]))
        batch = pad(tok.encode(_cycle(texts, THROUGHPUT_BATCH)))
        fn = self.function()
        lat = evaluate.measure(lambda: fn(*one).numpy(), lambda: fn(*batch).numpy(), budget_s=req.latency_budget_s,
                               min_calls=5, max_calls=500)
        return lat.p50_us, lat.p99_us, lat.throughput_per_s, lat.calls


def run_grouped(texts: list[str], tokenizer: Any, run: Any, batch: int = THROUGHPUT_BATCH) -> np.ndarray:
    """Outputs for every text, run in batches of similar length (as the server's batches are padded)."""
    from serving.text import pad

    ids = tokenizer.encode(texts)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out: list[np.ndarray | None] = [None] * len(ids)
    for start in range(0, len(order), batch):
        chunk = order[start : start + batch]
        result = np.asarray(run(*pad([ids[i] for i in chunk])), dtype=np.float32)
        for i, row in zip(chunk, result):
            out[i] = row
    return np.stack(out)  # type: ignore[arg-type]


def short_text(texts: list[str], tokenizer: Any) -> str:
    """The evaluation text whose token count is closest to SHORT_TOKENS."""
    lengths = [len(r) for r in tokenizer.encode(texts[:500])]
    return texts[int(np.argmin([abs(n - SHORT_TOKENS) for n in lengths]))]


def _make(name: str, work: _Lazy, cache: Cache, export_key: str, settings: Any, progress: Any) -> tuple[bytes, dict[str, Any]]:
    from modelprep.prep import CANDIDATE_FILE, MEASURES

    entry = cache.get(export_key)
    if entry is None:
        from modelprep.transformers import export

        progress("exporting TensorFlow → ONNX (tf2onnx) and fusing (ONNX Runtime)")
        proto = export.to_onnx(work.function(), settings.output)
        data, fused = export.fuse(proto, work.folder.num_heads, work.folder.hidden_size)
        entry = cache.put(export_key, {CANDIDATE_FILE: data, MEASURES: json.dumps({"fused": fused}).encode()})
    fused = json.loads((entry / MEASURES).read_text())["fused"]
    float_bytes = (entry / CANDIDATE_FILE).read_bytes()
    progress(f"making {name}")
    quantization = VARIANTS[name][0]
    data = float_bytes if quantization == "none" else quantize(float_bytes, quantization)
    tokenizer_json = (work.folder.path / "tokenizer.json").read_text()
    return with_metadata(data, settings.metadata(tokenizer_json)), {"fused_ops": fused}


def quantize(float_onnx: bytes, quantization: str) -> bytes:
    import onnx

    if quantization == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory(prefix="modelprep-quant-") as tmp:
            src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
            src.write_bytes(float_onnx)
            quantize_dynamic(str(src), str(dst), per_channel=True, weight_type=QuantType.QInt8,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
            return dst.read_bytes()
    if quantization == "float16":
        from onnxruntime.transformers.onnx_model import OnnxModel

        model = OnnxModel(onnx.load_from_string(float_onnx))
        model.convert_float_to_float16(keep_io_types=True)
        return model.model.SerializeToString()
    raise ValueError(quantization)


def with_metadata(data: bytes, meta: dict[str, str]) -> bytes:
    import onnx

    proto = onnx.load_from_string(data)
    keep = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    return proto.SerializeToString()


def _measure(req: PrepRequest, name: str, artifact: bytes, notes: dict[str, Any], texts: list[str],
             reference: np.ndarray, y: np.ndarray | None) -> tuple[Measure, np.ndarray]:
    from modelprep import evaluate
    from modelprep.measure import gzip_len, outputs_sha256
    from serving.text import TextModel

    with tempfile.TemporaryDirectory(prefix="modelprep-text-") as tmp:
        path = Path(tmp) / ARTIFACT
        path.write_bytes(artifact)
        model = TextModel(path, num_threads=req.threads)
    outputs = run_grouped(texts, model.tokenizer, lambda ids, mask: model.run_padded(ids, mask))
    metric = req.optimize.metric.value
    value = _score(metric, outputs, reference, y)
    if metric == "cosine":
        notes = {**notes, "cosine_min": round(float(_cosines(outputs, reference).min()), 6)}
    one = np.array([short_text(texts, model.tokenizer)], dtype=object)
    batch = np.array(_cycle(texts, THROUGHPUT_BATCH), dtype=object)
    lat = evaluate.measure(lambda: model.predict(one), lambda: model.predict(batch), budget_s=req.latency_budget_s)
    quantization, description = VARIANTS[name]
    row = Measure(
        name=name, runtime="onnx", technique="onnx", quantization=quantization, description=description,
        artifact_file=ARTIFACT, sha256=hashlib.sha256(artifact).hexdigest(), size_bytes=len(artifact),
        gzip_bytes=gzip_len(artifact), metric=req.optimize.metric, accuracy=round(value, 6),
        outputs_sha256=outputs_sha256(outputs), latency_p50_us=lat.p50_us, latency_p99_us=lat.p99_us,
        throughput_per_s=lat.throughput_per_s, latency_calls=lat.calls, threads=req.threads,
        notes=Notes.model_validate(notes),
    )
    return row, outputs


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(na * nb, axis=1)


def _score(metric: str, outputs: np.ndarray, reference: np.ndarray, y: np.ndarray | None) -> float:
    if metric == "cosine":
        return float(_cosines(outputs, reference).mean())
    from modelprep import evaluate

    assert y is not None
    return evaluate.score(metric, outputs, y)


def _cycle(texts: list[str], n: int) -> list[str]:
    return [texts[i % len(texts)] for i in range(n)]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def variant_artifacts(req: PrepRequest, cache: Cache) -> dict[str, bytes]:
    """The bytes of every variant a prep of `req` measured (for benchmarks and comparisons)."""
    from modelprep.prep import CANDIDATE_FILE

    keys = _keys(req, data_hashes(req))
    out = {}
    for name in VARIANTS:
        entry = cache.get(keys[name])
        if entry is not None:
            out[name] = (entry / CANDIDATE_FILE).read_bytes()
    return out


def float_outputs(req: PrepRequest, cache: Cache) -> np.ndarray | None:
    """The float model's outputs on the evaluation texts (the TensorFlow baseline a prep of `req` stored)."""
    from modelprep.prep import OUTPUTS

    entry = cache.get(_keys(req, data_hashes(req))["baseline"])
    return None if entry is None else np.load(entry / OUTPUTS)

"""One prep run of a Hugging Face text model: export once (TensorFlow → ONNX, pooling inside), make the
float32 / int8 per-channel / float16 ONNX variants, and measure each through serving's `TextModel`.

The baseline is the TensorFlow model the weights were loaded into (what the ONNX graphs are
compared with): metric `cosine` is each variant's mean cosine to its embeddings (the minimum is
kept in the variant's notes and gated by `optimize.min_cosine`), metric `accuracy` scores labelled
texts.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from iac.spec.errors import UserError
from modelprep.cache import Cache
from modelprep.families.huggingface.folder import Folder, open_folder, read_texts
from modelprep.families.huggingface.settings import text_of
from modelprep.family import Baselines, Measured, Notes, Progress, Variant
from modelprep.measure import gzip_len, outputs_sha256
from modelprep.report import Measure
from modelprep.report import Notes as NoteFields
from modelprep.request import PrepRequest, data_hashes, step_key

if TYPE_CHECKING:
    from modelprep.evaluate import Latency
    from serving.text import TextSettings, TextTokenizer

ARTIFACT = "model.onnx"
EXPORT_FILE = "export.onnx"
EXPORT_NOTES = "fused.json"
THROUGHPUT_BATCH = 32
SHORT_TOKENS = 16  # the single-sample latency is timed on a text of about this many tokens
CATALOG: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "onnx-float32", "onnx", "onnx", "none", "ONNX (TensorFlow → tf2onnx, ORT BERT fusion), float32", ARTIFACT
        ),
        Variant(
            "onnx-dynamic",
            "onnx",
            "onnx",
            "dynamic",
            "ONNX Runtime dynamic int8, per-channel weights, after fusion",
            ARTIFACT,
        ),
        Variant(
            "onnx-float16",
            "onnx",
            "onnx",
            "float16",
            "ONNX float16 weights and activations, float32 inputs and outputs",
            ARTIFACT,
        ),
    )
}


class TextSession:
    """The folder, the texts and the TensorFlow model, each loaded only when first needed."""

    def __init__(self, req: PrepRequest, cache: Cache, progress: Progress) -> None:
        self.req, self.cache, self.progress = req, cache, progress
        self.text = text_of(req)
        self.classify = self.text.task == "text-classification"
        self._texts: tuple[list[str], np.ndarray | None] | None = None
        self._folder: Folder | None = None
        self._function: Any = None

    @property
    def folder(self) -> Folder:
        if self._folder is None:
            self._folder = open_folder(self.req.model_path)
        return self._folder

    def texts(self) -> tuple[list[str], np.ndarray | None]:
        if self._texts is None:
            labels = _labels(self.req, self.folder) if self.classify else None
            self._texts = read_texts(self.req.evaluation_path, need_labels=self.classify, labels=labels)
        return self._texts

    def evaluation_samples(self) -> int:
        return len(self.texts()[0])

    def baselines(self) -> Baselines:
        texts, y = self.texts()
        self.progress("loading the model into TensorFlow (no PyTorch)")
        reference = run_grouped(texts, self.tokenizer(), lambda ids, mask: self.function()(ids, mask).numpy())
        value = _score(self.req.optimize.metric.value, reference, reference, y)
        lat = self.time_tf(texts)
        size = _folder_bytes(self.folder.path)
        baseline = Measure(
            name="tensorflow",
            runtime="tensorflow",
            technique="baseline",
            quantization="none",
            description="transformers' TFBertModel with the folder's weights, pooling in the same function",
            size_bytes=size,
            gzip_bytes=size,
            metric=self.req.optimize.metric,
            accuracy=round(value, 6),
            latency_p50_us=lat.p50_us,
            latency_p99_us=lat.p99_us,
            throughput_per_s=lat.throughput_per_s,
            latency_calls=lat.calls,
            threads=self.req.threads,
            baseline=True,
        )
        return Baselines([baseline], reference)

    def build(self, variants: Sequence[Variant]) -> Iterator[tuple[Variant, bytes, Notes]]:
        float_bytes, fused = self._export()
        settings = self.settings()
        tokenizer_json = (self.folder.path / "tokenizer.json").read_text()
        for variant in variants:
            self.progress(f"making {variant.name}")
            data = float_bytes if variant.quantization == "none" else quantize(float_bytes, variant.quantization)
            yield variant, with_metadata(data, settings.metadata(tokenizer_json)), {"fused_ops": fused}

    def measure(self, variant: Variant, artifact: bytes, notes: Notes, reference: np.ndarray | None) -> Measured:
        assert reference is not None  # the baselines keep the float model's outputs
        texts, y = self.texts()
        return _measure(self.req, variant, artifact, notes, texts, reference, y)

    def _export(self) -> tuple[bytes, dict[str, int]]:
        """The fused float32 ONNX graph every variant starts from, cached by the model's bytes."""
        key = step_key(self.req, data_hashes(self.req), "export")
        entry = self.cache.get(key)
        if entry is None:
            from modelprep.families.huggingface import export

            self.progress("exporting TensorFlow → ONNX (tf2onnx) and fusing (ONNX Runtime)")
            proto = export.to_onnx(self.function(), self.settings().output)
            data, fused = export.fuse(proto, self.folder.num_heads, self.folder.hidden_size)
            entry = self.cache.put(key, {EXPORT_FILE: data, EXPORT_NOTES: json.dumps(fused).encode()})
        return (entry / EXPORT_FILE).read_bytes(), json.loads((entry / EXPORT_NOTES).read_text())

    def settings(self) -> TextSettings:
        from serving.text import TextSettings

        labels = _labels(self.req, self.folder) if self.classify else None
        return TextSettings(
            task=self.text.task,
            max_length=self.text.max_length,
            truncation=self.text.truncation,
            labels=tuple(labels or ()),
            output="probabilities" if self.classify else "sentence_embedding",
        )

    def function(self) -> Any:
        if self._function is None:
            from modelprep.families.huggingface import export

            model, head = export.load_tf_bert(self.folder)
            pooling, normalize = self.folder.pooling()
            if self.classify and not (self.folder.path / "1_Pooling").is_dir():
                pooling, normalize = "pooler", False
            self._function = export.text_function(model, head, pooling, normalize, self.classify)
        return self._function

    def tokenizer(self) -> TextTokenizer:
        from serving.text import TextTokenizer

        return TextTokenizer((self.folder.path / "tokenizer.json").read_text(), self.text.max_length, "truncate")

    def time_tf(self, texts: list[str]) -> Latency:
        from modelprep import evaluate
        from serving.text import pad

        tok = self.tokenizer()
        one = pad(tok.encode([short_text(texts, tok)]))
        batch = pad(tok.encode(_cycle(texts, THROUGHPUT_BATCH)))
        fn = self.function()
        return evaluate.measure(
            lambda: fn(*one).numpy(),
            lambda: fn(*batch).numpy(),
            budget_s=self.req.latency_budget_s,
            min_calls=5,
            max_calls=500,
        )


def _labels(req: PrepRequest, folder: Folder) -> list[str]:
    text = text_of(req)
    labels = list(text.labels) if text.labels else folder.labels()
    if not labels:
        raise UserError.single(
            req.where("model.labels"),
            "model.labels",
            "the model's config.json has no id2label",
            "list the class names in model.labels, in output order",
        )
    head = folder.weights().get("classifier.weight")
    if head is not None and head.shape[0] != len(labels):
        raise UserError.single(
            req.where("model.labels"),
            "model.labels",
            f"{len(labels)} labels for a classifier with {head.shape[0]} outputs",
            "list one name per class, in output order",
        )
    return labels


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


def quantize(float_onnx: bytes, quantization: str) -> bytes:
    import onnx

    if quantization == "dynamic":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with tempfile.TemporaryDirectory(prefix="modelprep-quant-") as tmp:
            src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
            src.write_bytes(float_onnx)
            quantize_dynamic(
                str(src),
                str(dst),
                per_channel=True,
                weight_type=QuantType.QInt8,
                extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            )
            return dst.read_bytes()
    if quantization == "float16":
        from onnxruntime.transformers.onnx_model import OnnxModel

        model = OnnxModel(onnx.load_from_string(float_onnx))
        model.convert_float_to_float16(keep_io_types=True)
        return bytes(model.model.SerializeToString())
    raise ValueError(quantization)


def with_metadata(data: bytes, meta: dict[str, str]) -> bytes:
    import onnx

    proto = onnx.load_from_string(data)
    keep = [p for p in proto.metadata_props if p.key not in meta]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    return bytes(proto.SerializeToString())


def _measure(
    req: PrepRequest,
    variant: Variant,
    artifact: bytes,
    notes: Notes,
    texts: list[str],
    reference: np.ndarray,
    y: np.ndarray | None,
) -> Measured:
    from modelprep import evaluate
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
    row = Measure(
        name=variant.name,
        runtime=variant.runtime,
        technique=variant.technique,
        quantization=variant.quantization,
        description=variant.description,
        artifact_file=variant.artifact_file,
        sha256=hashlib.sha256(artifact).hexdigest(),
        size_bytes=len(artifact),
        gzip_bytes=gzip_len(artifact),
        metric=req.optimize.metric,
        accuracy=round(value, 6),
        outputs_sha256=outputs_sha256(outputs),
        latency_p50_us=lat.p50_us,
        latency_p99_us=lat.p99_us,
        throughput_per_s=lat.throughput_per_s,
        latency_calls=lat.calls,
        threads=req.threads,
        notes=NoteFields.model_validate(notes),
    )
    return Measured(row, outputs)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    nb = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.asarray(np.sum(na * nb, axis=1))


def _score(metric: str, outputs: np.ndarray, reference: np.ndarray, y: np.ndarray | None) -> float:
    if metric == "cosine":
        return float(_cosines(outputs, reference).mean())
    from modelprep import evaluate

    assert y is not None
    return evaluate.score(metric, outputs, y)


def _cycle(texts: list[str], n: int) -> list[str]:
    return [texts[i % len(texts)] for i in range(n)]


def _folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

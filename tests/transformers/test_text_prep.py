"""Text models without PyTorch: the tiny BERT exported through TensorFlow and tf2onnx, fused, quantized, measured, gated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from text_support import sentences

from iac.spec.errors import UserError
from iac.spec.load import load_resolved
from modelprep.cache import Cache
from modelprep.prep import prep
from modelprep.request import prep_request

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def text_prep(embedding_stack: Path, tmp_path_factory: pytest.TempPathFactory):
    cache = Cache(tmp_path_factory.mktemp("text-cache"))
    req = prep_request(load_resolved(embedding_stack)).changed(latency_budget_s=0.05)
    return req, cache, prep(req, cache)


def test_onnx_export_matches_transformers_tf_model_at_dynamic_shapes(tiny_bert: Path) -> None:
    import onnxruntime as ort

    from modelprep.families.huggingface import export
    from modelprep.families.huggingface.folder import open_folder

    folder = open_folder(tiny_bert)
    made = export.export(folder, classify=False)
    assert made.fused.get("Attention") == 2 and made.fused.get("SkipLayerNormalization") == 4, made.fused
    model, _ = export.load_tf_bert(folder)
    session = ort.InferenceSession(made.onnx, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch, seq in ((1, 3), (4, 17), (7, 64)):
        ids = rng.integers(5, 200, size=(batch, seq)).astype(np.int64)
        mask = np.ones_like(ids)
        mask[0, seq // 2 + 1 :] = 0  # one padded row
        ids[mask == 0] = 0
        hidden = model({"input_ids": ids, "attention_mask": mask}, training=False).last_hidden_state.numpy()
        m = mask[..., None]
        want = (hidden * m).sum(1) / m.sum(1)
        want /= np.linalg.norm(want, axis=1, keepdims=True)
        got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        assert got.shape == (batch, 32)
        np.testing.assert_allclose(got, want, atol=2e-5)


def test_prep_makes_three_variants_gates_on_cosine_and_caches(text_prep) -> None:
    req, cache, result = text_prep
    report = result.report
    assert [v.name for v in report.variants] == ["onnx-float32", "onnx-dynamic", "onnx-float16"]
    assert report.metric.value == "cosine" and report.baselines[0].name == "tensorflow"
    assert report.input.dtype == "string" and report.evaluation_samples == 200
    by_name = {v.name: v for v in report.variants}
    assert by_name["onnx-float32"].accuracy > 0.9999
    assert by_name["onnx-dynamic"].size_bytes < 0.6 * by_name["onnx-float32"].size_bytes
    for v in report.variants:
        assert v.passed_gate and v.notes.cosine_min is not None and v.notes.cosine_min > 0.9
        assert v.notes.fused_ops and v.notes.fused_ops["Attention"] == 2
    assert report.variant == "onnx-dynamic"  # smallest that passes
    assert result.artifact_path.name == "model.onnx" and result.chart_path.is_file()
    again = prep(req, cache)
    assert again.cached and again.report == report


def test_min_cosine_above_every_variant_fails_the_gate(text_prep) -> None:
    req, cache, _ = text_prep
    strict = req.changed(optimize={"min_cosine": 1.0, "variants": ["onnx-dynamic"]})
    with pytest.raises(UserError) as info:
        prep(strict, cache)
    assert "below optimize.min_cosine 1.0" in str(info.value)


def test_artifact_carries_tokenizer_and_settings(text_prep) -> None:
    from serving.text import TextModel

    _, _, result = text_prep
    model = TextModel(result.artifact_path)
    assert model.settings.task == "sentence-embedding" and model.settings.max_length == 64
    out = model.predict(np.array(["hello world", "a good movie"], dtype=object))
    assert out.shape == (2, 32)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-3)


def test_classifier_outputs_probabilities_and_scores_accuracy(tiny_classifier: Path, tmp_path: Path) -> None:
    import shutil

    from serving.text import TextModel

    shutil.copytree(tiny_classifier, tmp_path / "model")
    texts = sentences(60, seed=5)
    (tmp_path / "eval.jsonl").write_text(
        "".join(
            json.dumps({"text": t, "label": ["negative", "neutral", "positive"][i % 3]}) + "\n"
            for i, t in enumerate(texts)
        )
    )
    (tmp_path / "model.yaml").write_text(
        "name: tiny-classifier\nmodel:\n  path: model\n  task: text-classification\n"
        "data:\n  calibration: eval.jsonl\n  evaluation: eval.jsonl\n"
        "optimize:\n  max_accuracy_drop: 0.5\n  variants: [onnx-float32, onnx-dynamic]\n"
    )
    req = prep_request(load_resolved(tmp_path / "model.yaml")).changed(latency_budget_s=0.05)
    result = prep(req, Cache(tmp_path / "cache"))
    assert result.report.metric.value == "accuracy"
    model = TextModel(result.artifact_path)
    assert model.labels == ("negative", "neutral", "positive")
    probs = model.predict(np.array(texts[:5], dtype=object))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-4)


def test_render_gives_a_text_serving_config_and_the_tokenizer_requirements(
    text_prep, embedding_stack: Path, tmp_path: Path
) -> None:
    from iac.build.render import render

    _, _, result = text_prep
    files = render(load_resolved(embedding_stack), result.artifact_path, result.report, tmp_path / "ctx")
    names = {f.relative_to(tmp_path / "ctx").as_posix() for f in files}
    assert "model/model.onnx" in names and "app/serving/text.py" in names
    config = json.loads((tmp_path / "ctx" / "serving.json").read_text())
    assert config["inputs"] == [{"name": "text", "shape": [], "dtype": "string"}] and config["runtime"] == "onnx"
    assert "tokenizers==" in (tmp_path / "ctx" / "requirements.txt").read_text()
    assert any(n.startswith("wheels/tokenizers-") for n in names)


def test_float_model_gives_each_text_the_same_vector_alone_and_in_a_mixed_batch(text_prep, tmp_path: Path) -> None:
    import hashlib

    from serving.text import TextModel

    _, cache, result = text_prep
    float_entry = next(v for v in result.report.variants if v.name == "onnx-float32")
    artifact = next(
        p
        for p in cache.root.glob("*/candidate.bin")
        if hashlib.sha256(p.read_bytes()).hexdigest() == float_entry.sha256
    )
    (tmp_path / "model.onnx").write_bytes(artifact.read_bytes())
    model = TextModel(tmp_path / "model.onnx")
    texts = sentences(24, seed=3, longest=40)
    together = model.predict(np.array(texts, dtype=object))
    for text, row in zip(texts, together):
        np.testing.assert_allclose(model.predict(np.array([text], dtype=object))[0], row, atol=2e-5)

"""Spec fields for model families: Hugging Face directories (format inferred), text inputs, several integer inputs."""

from __future__ import annotations

from pathlib import Path

import pytest

from iac.spec.errors import UserError
from iac.spec.load import load, load_resolved, validate
from iac.spec.models import DType, ModelFormat, Task, Truncation

EMBEDDING = """\
name: minilm
model:
  path: model/minilm
  task: sentence-embedding
  inputs:
    - name: text
      dtype: string
      tokenizer:
        max_length: 128
        truncation: refuse
data:
  calibration: data/calibration.txt
  evaluation: data/evaluation.txt
optimize:
  metric: cosine
  min_cosine: 0.97
  variants: [onnx-float32, onnx-dynamic, onnx-float16]
"""

RECOMMENDER = """\
name: recommender
model:
  path: model/recommender.keras
  inputs:
    - name: user
      shape: [1]
      dtype: int32
    - name: item
      shape: [1]
      dtype: int64
data:
  calibration: data/calibration.npz
  evaluation: data/evaluation.npz
optimize:
  metric: mae
"""


def _hf_dir(folder: Path) -> None:
    model = folder / "model" / "minilm"
    model.mkdir(parents=True)
    (model / "config.json").write_text("{}")
    (model / "tokenizer.json").write_text("{}")
    (folder / "data").mkdir()
    for name in ("calibration", "evaluation"):
        (folder / "data" / f"{name}.txt").write_text("a text\n")


def test_huggingface_directory_resolves_with_its_text_input(tmp_path: Path) -> None:
    _hf_dir(tmp_path)
    (tmp_path / "model.yaml").write_text(EMBEDDING)
    resolved = load_resolved(tmp_path / "model.yaml")
    assert resolved.model_format == ModelFormat.huggingface
    assert resolved.spec.model.task == Task.sentence_embedding
    (text,) = resolved.inputs
    assert text.dtype == DType.string and text.tokenizing.max_length == 128
    assert text.tokenizing.truncation == Truncation.refuse


def test_format_is_inferred_from_config_json_and_inputs_default_to_one_text(tmp_path: Path) -> None:
    _hf_dir(tmp_path)
    spec = "\n".join(line for line in EMBEDDING.splitlines() if "task:" not in line) + "\n"
    spec = spec.replace("  path: model/minilm\n", "  path: model/minilm\n  task: text-classification\n")
    spec = spec.replace("data/evaluation.txt", "data/evaluation.jsonl").replace(
        "  metric: cosine\n  min_cosine: 0.97\n", ""
    )
    (tmp_path / "data" / "evaluation.jsonl").write_text('{"text": "a", "label": 0}\n')
    body = spec.split("  inputs:")[0] + "data:" + spec.split("data:")[1]
    (tmp_path / "model.yaml").write_text(body)
    resolved = load_resolved(tmp_path / "model.yaml")
    assert resolved.model_format == ModelFormat.huggingface
    assert [t.name for t in resolved.inputs] == ["text"] and resolved.inputs[0].tokenizing.max_length == 256


def test_missing_tokenizer_is_reported(tmp_path: Path) -> None:
    _hf_dir(tmp_path)
    (tmp_path / "model" / "minilm" / "tokenizer.json").unlink()
    (tmp_path / "model.yaml").write_text(EMBEDDING)
    with pytest.raises(UserError) as info:
        validate(load(tmp_path / "model.yaml"))
    assert [p.path for p in info.value.problems] == ["model.path"]
    assert "tokenizer.json" in str(info.value.problems[0])


def test_keras_model_with_two_integer_inputs(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "model" / "recommender.keras").write_bytes(b"placeholder")
    for name in ("calibration", "evaluation"):
        (tmp_path / "data" / f"{name}.npz").write_bytes(b"placeholder")
    (tmp_path / "model.yaml").write_text(RECOMMENDER)
    resolved = load_resolved(tmp_path / "model.yaml")
    assert resolved.model_format == ModelFormat.keras
    assert [(t.name, t.dtype) for t in resolved.inputs] == [("user", DType.int32), ("item", DType.int64)]

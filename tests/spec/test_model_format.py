"""model.format and model.task select the model family: written, or inferred from the model's path."""

from __future__ import annotations

from pathlib import Path

import pytest

from iac.spec.errors import UserError
from iac.spec.load import load_resolved
from iac.spec.models import ModelFormat, Task

DATA = "data:\n  calibration: data/calibration.npz\n  evaluation: data/evaluation.npz\n"


def _spec(folder: Path, model: str) -> Path:
    (folder / "data").mkdir(exist_ok=True)
    for name in ("calibration", "evaluation"):
        (folder / "data" / f"{name}.npz").write_bytes(b"placeholder")
    spec = folder / "model.yaml"
    spec.write_text(f"name: m\nmodel:\n{model}{DATA}")
    return spec


def test_a_keras_file_is_keras_and_predicts(tmp_path: Path) -> None:
    (tmp_path / "m.keras").write_bytes(b"placeholder")
    resolved = load_resolved(_spec(tmp_path, "  path: m.keras\n  inputs: [{name: x, shape: [4]}]\n"))
    assert resolved.model_format == ModelFormat.keras
    assert resolved.spec.model.resolved_task(resolved.model_format) == Task.predict


def test_a_gguf_file_is_gguf_for_text_generation(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"placeholder")
    resolved = load_resolved(_spec(tmp_path, "  path: m.gguf\n"))
    assert resolved.model_format == ModelFormat.gguf
    assert resolved.spec.model.resolved_task(resolved.model_format) == Task.text_generation


def test_a_folder_with_model_bin_is_ctranslate2_for_speech(tmp_path: Path) -> None:
    (tmp_path / "whisper").mkdir()
    for name in ("model.bin", "config.json"):
        (tmp_path / "whisper" / name).write_bytes(b"{}")
    resolved = load_resolved(_spec(tmp_path, "  path: whisper\n"))
    assert resolved.model_format == ModelFormat.ctranslate2
    assert resolved.spec.model.resolved_task(resolved.model_format) == Task.speech_recognition


def test_a_task_the_format_does_not_do_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "m.gguf").write_bytes(b"placeholder")
    with pytest.raises(UserError) as info:
        load_resolved(_spec(tmp_path, "  path: m.gguf\n  task: speech-recognition\n"))
    assert "model.yaml:2: model: a gguf model does not do speech-recognition; use task: text-generation" in str(
        info.value
    )


def test_a_keras_model_takes_no_other_task(tmp_path: Path) -> None:
    (tmp_path / "m.keras").write_bytes(b"placeholder")
    with pytest.raises(UserError) as info:
        load_resolved(
            _spec(
                tmp_path,
                "  path: m.keras\n  format: keras\n  task: text-generation\n  inputs: [{name: x, shape: [4]}]\n",
            )
        )
    assert "a keras model does predict, not text-generation" in str(info.value)

"""modelprep on the real digits model with real TensorFlow and LiteRT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from iac.spec.load import load_resolved
from modelprep.request import prep_request
from modelprep.cache import Cache
from iac.spec.errors import UserError
from modelprep.prep import PrepRequest, prep, prep_key

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def request_int8(digits_example: Path) -> PrepRequest:
    return prep_request(load_resolved(digits_example / "model.yaml"))


def test_int8_is_small_and_keeps_accuracy(request_int8: PrepRequest, tmp_path: Path) -> None:
    report = prep(request_int8, Cache(tmp_path)).report
    float32 = next(b for b in report["baselines"] if b["name"] == "litert-float32")
    assert report["size_bytes"] <= 0.35 * float32["size_bytes"], report
    assert report["baseline_accuracy"] - report["accuracy"] <= 0.01, report
    assert report["accuracy"] >= 0.95


def test_artifact_runs_in_litert_with_a_dynamic_batch(request_int8: PrepRequest, tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    result = prep(request_int8, Cache(tmp_path))
    interpreter = Interpreter(model_path=str(result.artifact_path))
    assert list(interpreter.get_input_details()[0]["shape_signature"]) == [-1, 64]
    with np.load(request_int8.evaluation_path) as data:
        x = data["x"][:8]
    interpreter.resize_tensor_input(0, [8, 64])
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    assert interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).shape == (8, 10)


def test_unmeetable_gate_fails_and_caches_nothing(request_int8: PrepRequest, digits_example: Path, tmp_path: Path) -> None:
    # A model whose float baseline is clearly better than its int8 artifact can ever be: hide
    # the gap with a tiny tolerance by evaluating on labels the int8 model gets wrong.
    strict = replace(request_int8, max_accuracy_drop=0.0, evaluation_path=str(_hard_labels(request_int8, tmp_path)))
    cache = Cache(tmp_path / "cache")
    with pytest.raises(UserError) as info:
        prep(strict, cache)
    assert "optimize.max_accuracy_drop" in str(info.value) and "points of accuracy" in str(info.value)
    assert cache.get(prep_key(strict)) is None
    assert not list((tmp_path / "cache").rglob("*.tflite")), "nothing deployable may be left behind"


def _hard_labels(req: PrepRequest, tmp_path: Path) -> Path:
    """Evaluation data on which the float model and the int8 artifact disagree: the float
    model's own predictions as labels, on inputs scaled far outside the calibration range."""
    from modelprep.convert import load_model

    with np.load(req.evaluation_path) as data:
        x = np.clip(data["x"] * 6.0 - 2.0, -3.0, 4.0).astype(np.float32)
    labels = np.argmax(np.asarray(load_model(req.model_path)(x)), axis=-1)
    path = tmp_path / "hard.npz"
    np.savez(path, x=x, y=labels)
    return path


def test_cli_gate_failure_exits_nonzero(digits_example: Path, tmp_path: Path) -> None:
    spec = digits_example / "gate.yaml"
    hard = _hard_labels(prep_request(load_resolved(digits_example / "model.yaml")), tmp_path)
    text = (digits_example / "model.yaml").read_text()
    spec.write_text(text.replace("data/evaluation.npz", str(hard)).replace("max_accuracy_drop: 0.01", "max_accuracy_drop: 0.0"))
    env = {**os.environ, "MODELSTACK_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-m", "iac.cli.app", "prep", str(spec)], capture_output=True, text=True, env=env)
    assert run.returncode == 2, run.stderr
    assert "optimize.max_accuracy_drop" in run.stderr and "Traceback" not in run.stderr
    line = next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if "max_accuracy_drop" in text)
    assert f"gate.yaml:{line}: optimize.max_accuracy_drop" in run.stderr, "the error names the spec's file and line"
    assert not list((tmp_path / "cache").rglob("*.tflite"))


def test_second_prep_does_no_tensorflow_work(digits_example: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MODELSTACK_CACHE": str(tmp_path / "cache")}
    spec = digits_example / "model.yaml"
    first = subprocess.run([sys.executable, "-m", "iac.cli.app", "prep", str(spec), "--json"], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    probe = (
        "import sys, json; from iac.spec.load import load_resolved; from modelprep.request import prep_request; "
        "from modelprep.prep import prep; r = prep(prep_request(load_resolved(sys.argv[1]))); "
        "print(json.dumps({'cached': r.cached, 'tf': 'tensorflow' in sys.modules, 'key': r.key}))"
    )
    second = subprocess.run([sys.executable, "-c", probe, str(spec)], capture_output=True, text=True, env=env)
    assert second.returncode == 0, second.stderr
    outcome = json.loads(second.stdout)
    assert outcome["cached"] and not outcome["tf"]
    assert outcome["key"] == json.loads(first.stdout)["key"]


def test_sha256_pin_mismatch_is_a_user_error(request_int8: PrepRequest, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="model.sha256"):
        prep(replace(request_int8, model_sha256="0" * 64), Cache(tmp_path))


def test_evaluation_data_without_labels_is_a_user_error(request_int8: PrepRequest, tmp_path: Path) -> None:
    path = tmp_path / "unlabelled.npz"
    with np.load(request_int8.evaluation_path) as data:
        np.savez(path, x=data["x"])
    with pytest.raises(UserError, match="no labels"):
        prep(replace(request_int8, evaluation_path=str(path)), Cache(tmp_path))


def test_calibration_of_the_wrong_shape_is_a_user_error(request_int8: PrepRequest, tmp_path: Path) -> None:
    path = tmp_path / "wrong.npz"
    np.savez(path, x=np.zeros((10, 8, 8), np.float32))
    with pytest.raises(UserError, match=r"data.calibration.*\[N, 64\]"):
        prep(replace(request_int8, calibration_path=str(path)), Cache(tmp_path))


def test_corrupt_model_file_is_a_user_error(request_int8: PrepRequest, tmp_path: Path) -> None:
    path = tmp_path / "corrupt.keras"
    path.write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="model.path.*cannot be loaded"):
        prep(replace(request_int8, model_path=str(path)), Cache(tmp_path))


def test_interrupted_write_leaves_no_entry(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    with pytest.raises(TypeError):  # the second file cannot be written: the put dies half-way
        cache.put("k" * 64, {"model.tflite": b"x", "report.json": None})  # type: ignore[dict-item]
    assert cache.get("k" * 64) is None
    assert list(cache.root.iterdir()) == [], "no staging directory or partial entry is left"

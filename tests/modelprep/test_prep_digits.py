"""modelprep on the real digits model with real TensorFlow and LiteRT."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from iac.spec.errors import UserError
from iac.spec.load import load_resolved
from modelprep.cache import Cache
from modelprep.prep import prep
from modelprep.request import PrepRequest, prep_key, prep_request

pytestmark = pytest.mark.tf


def _line_of(spec: Path, field: str) -> int:
    return next(i for i, text in enumerate(spec.read_text().splitlines(), 1) if text.strip().startswith(f"{field}:"))


def test_int8_is_small_and_keeps_accuracy(request_int8: PrepRequest, tmp_path: Path) -> None:
    result = prep(request_int8, Cache(tmp_path))
    report = result.report
    float32 = report.reference
    assert float32 is not None
    assert report.size_bytes <= 0.35 * float32.size_bytes, report
    assert report.baseline_accuracy - report.accuracy <= 0.01, report
    assert report.accuracy >= 0.95
    # The outputs prep measured are stored beside the artifact, and they are what the gate scored.
    outputs = np.load(result.outputs_path)
    with np.load(request_int8.evaluation_path) as data:
        labels = data["y"]
    assert outputs.dtype == np.float32 and outputs.shape == (len(labels), 10)
    assert float(np.mean(np.argmax(outputs, axis=-1) == labels)) == pytest.approx(report.accuracy, abs=1e-6)


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


def test_unmeetable_gate_fails_at_the_specs_line_and_caches_nothing(
    request_int8: PrepRequest, digits_example: Path, hard_labels: Callable[[PrepRequest], Path], tmp_path: Path
) -> None:
    # A model whose float baseline is clearly better than its int8 artifact can ever be: hide
    # the gap with a tiny tolerance by evaluating on labels the int8 model gets wrong.
    strict = request_int8.changed(optimize={"max_accuracy_drop": 0.0}, evaluation_path=str(hard_labels(request_int8)))
    cache = Cache(tmp_path / "cache")
    with pytest.raises(UserError) as info:
        prep(strict, cache)
    assert "optimize.max_accuracy_drop" in str(info.value) and "points of accuracy" in str(info.value)
    line = _line_of(digits_example / "model.yaml", "max_accuracy_drop")
    assert {p.where for p in info.value.problems} == {f"model.yaml:{line}"}, "modelprep names the spec's own line"
    assert cache.get(prep_key(strict)) is None
    assert not list((tmp_path / "cache").rglob("*.tflite")), "nothing deployable may be left behind"


def test_cli_gate_failure_exits_nonzero(
    digits_example: Path, hard_labels: Callable[[PrepRequest], Path], tmp_path: Path
) -> None:
    spec = digits_example / "gate.yaml"
    hard = hard_labels(prep_request(load_resolved(digits_example / "model.yaml")))
    text = (digits_example / "model.yaml").read_text()
    spec.write_text(
        text.replace("data/evaluation.npz", str(hard)).replace("max_accuracy_drop: 0.01", "max_accuracy_drop: 0.0")
    )
    env = {**os.environ, "MODELSTACK_CACHE": str(tmp_path / "cache")}
    run = subprocess.run(
        [sys.executable, "-m", "iac.cli.app", "prep", str(spec)], capture_output=True, text=True, env=env
    )
    assert run.returncode == 2, run.stderr
    assert "optimize.max_accuracy_drop" in run.stderr and "Traceback" not in run.stderr
    line = _line_of(spec, "max_accuracy_drop")
    assert f"gate.yaml:{line}: optimize.max_accuracy_drop" in run.stderr, "the error names the spec's file and line"
    assert not list((tmp_path / "cache").rglob("*.tflite"))


def test_second_prep_does_no_tensorflow_work(digits_example: Path, tmp_path: Path) -> None:
    env = {**os.environ, "MODELSTACK_CACHE": str(tmp_path / "cache")}
    spec = digits_example / "model.yaml"
    first = subprocess.run(
        [sys.executable, "-m", "iac.cli.app", "prep", str(spec), "--json"], capture_output=True, text=True, env=env
    )
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


def test_sha256_pin_mismatch_is_a_user_error_at_the_model_section(
    request_int8: PrepRequest, digits_example: Path, tmp_path: Path
) -> None:
    with pytest.raises(UserError, match="model.sha256") as info:
        prep(request_int8.changed(model_sha256="0" * 64), Cache(tmp_path))
    # The example spec writes no pin: the error points at the model section it belongs in.
    assert info.value.problems[0].where == f"model.yaml:{_line_of(digits_example / 'model.yaml', 'model')}"


def test_evaluation_data_without_labels_is_a_user_error(request_int8: PrepRequest, tmp_path: Path) -> None:
    path = tmp_path / "unlabelled.npz"
    with np.load(request_int8.evaluation_path) as data:
        np.savez(path, x=data["x"])
    with pytest.raises(UserError, match="no labels"):
        prep(request_int8.changed(evaluation_path=str(path)), Cache(tmp_path))


def test_calibration_of_the_wrong_shape_is_a_user_error(request_int8: PrepRequest, tmp_path: Path) -> None:
    path = tmp_path / "wrong.npz"
    np.savez(path, x=np.zeros((10, 8, 8), np.float32))
    with pytest.raises(UserError, match=r"data.calibration.*\[N, 64\]"):
        prep(request_int8.changed(calibration_path=str(path)), Cache(tmp_path))


def test_corrupt_model_file_is_a_user_error(request_int8: PrepRequest, tmp_path: Path) -> None:
    path = tmp_path / "corrupt.keras"
    path.write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="model.path.*cannot be loaded"):
        prep(request_int8.changed(model_path=str(path)), Cache(tmp_path))


def test_interrupted_write_leaves_no_entry(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    with pytest.raises(TypeError):  # the second file cannot be written: the put dies half-way
        cache.put("k" * 64, {"model.tflite": b"x", "report.json": None})  # type: ignore[dict-item]
    assert cache.get("k" * 64) is None
    assert list(cache.root.iterdir()) == [], "no staging directory or partial entry is left"

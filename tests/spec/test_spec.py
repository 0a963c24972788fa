"""Spec fixtures named by outcome: each invalid_*.yaml states the message it must produce."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from iac.spec.errors import UserError
from iac.spec.load import load, load_resolved, validate

SPECS = Path(__file__).resolve().parents[1] / "fixtures" / "specs"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture()
def spec_dir(tmp_path: Path) -> Path:
    """An example folder with the files the specs name (contents do not matter to validation)."""
    (tmp_path / "model").mkdir()
    (tmp_path / "data").mkdir()
    (tmp_path / "model" / "digits.keras").write_bytes(b"placeholder")
    for name in ("calibration", "evaluation"):
        (tmp_path / "data" / f"{name}.npz").write_bytes(b"placeholder")
    return tmp_path


def _copy(spec: Path, folder: Path) -> Path:
    target = folder / spec.name
    shutil.copy(spec, target)
    return target


@pytest.mark.parametrize("spec", sorted(SPECS.glob("valid_*.yaml")), ids=lambda p: p.stem)
def test_valid_specs_resolve(spec: Path, spec_dir: Path) -> None:
    resolved = load_resolved(_copy(spec, spec_dir))
    assert Path(resolved.model_path) == spec_dir / "model" / "digits.keras"
    assert resolved.spec.model.inputs[0].shape == [64]


INVALID = sorted(SPECS.glob("invalid_*.yaml"))


def test_there_are_at_least_twelve_invalid_fixtures() -> None:
    assert len(INVALID) >= 12


@pytest.mark.parametrize("spec", INVALID, ids=lambda p: p.stem)
def test_invalid_spec_names_file_line_field_and_fix(spec: Path, spec_dir: Path) -> None:
    expected = spec.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(UserError) as info:
        doc = load(_copy(spec, spec_dir))
        validate(doc)
    messages = [str(p) for p in info.value.problems]
    assert any(m.startswith(f"{spec.name}:{expected}") for m in messages), messages
    assert all("; " in m for m in messages), "every message carries a fix"


def test_all_problems_are_reported_at_once(spec_dir: Path) -> None:
    spec = spec_dir / "model.yaml"
    text = (SPECS / "valid_minimal.yaml").read_text()
    spec.write_text(text + "optimize:\n  quantization: int4\nserving:\n  port: 80\n")
    with pytest.raises(UserError) as info:
        validate(load(spec))
    assert [p.path for p in info.value.problems] == ["optimize.quantization", "serving.port"]


def test_spec_objects_are_frozen(spec_dir: Path) -> None:
    resolved = load_resolved(_copy(SPECS / "valid_minimal.yaml", spec_dir))
    from pydantic import ValidationError

    with pytest.raises(ValidationError):
        resolved.spec.optimize.quantization = "none"  # type: ignore[misc]


def test_cli_validate_exits_2_with_one_line_per_problem_and_no_traceback(spec_dir: Path) -> None:
    spec = _copy(SPECS / "invalid_optimize_quantization_unsupported.yaml", spec_dir)
    run = subprocess.run([sys.executable, "-m", "iac.cli.app", "validate", str(spec)], capture_output=True, text=True)
    assert run.returncode == 2
    assert "optimize.quantization" in run.stderr and "Traceback" not in run.stderr


def test_committed_schema_matches_the_models() -> None:
    from iac.spec.models import ModelSpec

    committed = json.loads((REPO / "docs" / "model.schema.json").read_text())
    assert committed == ModelSpec.model_json_schema(), "regenerate with: modelstack schema > docs/model.schema.json"


@pytest.mark.parametrize(
    "spec", sorted((REPO / "modelprep" / "examples" / "specs").glob("*.yaml")), ids=lambda p: p.stem
)
def test_example_specs_point_at_the_schema(spec: Path) -> None:
    first = spec.read_text().splitlines()[0]
    prefix = "# yaml-language-server: $schema="
    assert first.startswith(prefix)
    assert (spec.parent / first[len(prefix) :]).resolve() == REPO / "docs" / "model.schema.json"

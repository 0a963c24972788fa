"""The one API-key rule every command follows: the variable that `serving.api_key_env` names."""

from __future__ import annotations

from pathlib import Path

import pytest

from iac.service_client import api_key_headers
from iac.spec.load import load_resolved

EXAMPLE = Path(__file__).resolve().parents[2] / "modelprep" / "examples" / "specs" / "digits.yaml"


def _spec(tmp_path: Path, api_key_env: str | None):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "digits.keras").write_bytes(b"k")
    (tmp_path / "data").mkdir()
    for name in ("calibration", "evaluation"):
        (tmp_path / "data" / f"{name}.npz").write_bytes(b"d")
    text = EXAMPLE.read_text()
    if api_key_env:
        text = text.replace("serving:\n", f"serving:\n  api_key_env: {api_key_env}\n", 1)
    (tmp_path / "model.yaml").write_text(text)
    return load_resolved(tmp_path / "model.yaml")


def test_the_key_comes_from_the_variable_the_spec_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGITS_TEST_KEY", "s3cret")
    monkeypatch.setenv("MODELSTACK_API_KEY", "not-this-one")
    assert api_key_headers(_spec(tmp_path, "DIGITS_TEST_KEY")) == {"Authorization": "Bearer s3cret"}


def test_no_key_when_the_spec_names_none_whatever_the_shell_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MODELSTACK_API_KEY", "not-this-one")
    assert api_key_headers(_spec(tmp_path, None)) == {}


def test_no_key_when_the_named_variable_is_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DIGITS_TEST_KEY", raising=False)
    assert api_key_headers(_spec(tmp_path, "DIGITS_TEST_KEY")) == {}

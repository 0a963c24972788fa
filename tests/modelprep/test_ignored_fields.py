"""An optimize field the model's family does not read is refused at its line, never silently ignored.

Fixtures are named by outcome (tests/fixtures/specs/ignored/invalid_optimize_<field>_on_<family>.yaml),
each stating its message on its first line; one per field a family ignores.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from iac.spec.errors import UserError
from iac.spec.load import load_resolved
from iac.spec.models import Optimize
from modelprep.families import FAMILIES, family
from modelprep.request import prep_request

IGNORED = Path(__file__).resolve().parents[1] / "fixtures" / "specs" / "ignored"
FIXTURES = sorted(IGNORED.glob("invalid_*.yaml"))


@pytest.fixture()
def project(tmp_path: Path) -> Path:
    """The files the fixtures name: a Keras file, a Hugging Face folder, a GGUF, a CTranslate2 folder,
    arrays and texts
    (contents do not matter before prep runs)."""
    (tmp_path / "model" / "minilm").mkdir(parents=True)
    (tmp_path / "data").mkdir()
    (tmp_path / "model" / "digits.keras").write_bytes(b"placeholder")
    (tmp_path / "model" / "chat.gguf").write_bytes(b"placeholder")
    (tmp_path / "model" / "whisper").mkdir()
    for name in ("model.bin", "config.json"):  # a CTranslate2 folder
        (tmp_path / "model" / "whisper" / name).write_bytes(b"{}")
    for name in ("config.json", "tokenizer.json"):
        (tmp_path / "model" / "minilm" / name).write_text("{}")
    for name in ("calibration", "evaluation"):
        (tmp_path / "data" / f"{name}.npz").write_bytes(b"placeholder")
        (tmp_path / "data" / f"{name}.txt").write_text("a text\n")
    return tmp_path


@pytest.mark.parametrize("spec", FIXTURES, ids=lambda p: p.stem)
def test_an_ignored_optimize_field_is_a_located_error_with_the_fix(spec: Path, project: Path) -> None:
    expected = spec.read_text().splitlines()[0].removeprefix("# expect: ")
    target = project / spec.name
    shutil.copy(spec, target)
    resolved = load_resolved(target)  # a valid spec: only its family refuses the field
    with pytest.raises(UserError) as info:
        prep_request(resolved)
    (message,) = [str(p) for p in info.value.problems]
    assert message.startswith(f"{spec.name}:{expected}; remove optimize."), message


def test_every_field_a_family_ignores_has_its_fixture() -> None:
    names = {p.stem for p in FIXTURES}
    for name in FAMILIES:
        ignored = set(Optimize.model_fields) - family(name).honours
        missing = {f"invalid_optimize_{field}_on_{name}" for field in ignored} - names
        assert not missing, f"add fixtures for {sorted(missing)}"


def test_fields_a_family_honours_are_taken(project: Path) -> None:
    spec = project / "model.yaml"
    text = (IGNORED / "invalid_optimize_min_cosine_on_keras.yaml").read_text().replace("  min_cosine: 0.99\n", "")
    spec.write_text(text + "  int8_io: true\n  pruning: {target_sparsity: 0.5}\n")
    request = prep_request(load_resolved(spec))
    assert request.family == "keras" and request.optimize.pruning is not None


def test_a_text_request_and_its_key_survive_pulumi_state(project: Path) -> None:
    """The family's settings travel as JSON: state's floats validate back to the same request and key."""
    import json

    from modelprep.families.huggingface.settings import text_of
    from modelprep.request import PrepRequest, prep_key

    spec = project / "model.yaml"
    spec.write_text(
        (IGNORED / "invalid_optimize_int8_io_on_huggingface.yaml").read_text().replace("  int8_io: true\n", "")
    )
    req = prep_request(load_resolved(spec))
    assert req.family == "huggingface" and text_of(req).max_length == 256

    def as_state(value: object) -> object:
        if isinstance(value, dict):
            return {k: as_state(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [as_state(v) for v in value]
        return float(value) if isinstance(value, int) and not isinstance(value, bool) else value

    back = PrepRequest.model_validate(as_state(json.loads(req.model_dump_json())))
    assert prep_key(back) == prep_key(req) and text_of(back) == text_of(req)

"""The typed report is the one source for what later stages show: serving.json's metadata (and so the
server's /metadata), `modelstack diff`, the CLI table and the Pulumi outputs. No TensorFlow."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from prep_reports import passing_report

from modelprep.report import PrepReport

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    folder = tmp_path / "digits"
    for name in ("model/digits.keras", "data/calibration.npz", "data/evaluation.npz"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(name.encode())
    shutil.copy(REPO / "modelprep" / "examples" / "specs" / "digits.yaml", folder / "model.yaml")
    return folder / "model.yaml"


def test_serving_metadata_is_the_reports_served_model(spec_file: Path) -> None:
    from iac.build.render import serving_config
    from iac.spec.load import load_resolved

    report = passing_report()
    config = serving_config(load_resolved(spec_file), report)
    assert config["metadata"] == report.served().model_dump(mode="json")
    assert config["runtime"] == report.runtime and config["artifact"] == "/app/model/model.tflite"
    assert type(config["metadata"]["size_bytes"]) is int


def test_diff_compares_what_is_served_with_the_cached_report(
    spec_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import iac.review
    import modelprep.prep
    from iac.spec.load import load_resolved
    from modelprep.prep import PrepResult

    deployed = passing_report()
    edited = passing_report(
        name="litert-dynamic", quantization="dynamic", size_bytes=11, sha256="c" * 64, accuracy=0.98
    )
    # What the server answers: serving.json's metadata, passed through JSON as the server does.
    served = {"modelstack": json.loads(json.dumps(deployed.served().model_dump(mode="json")))}
    monkeypatch.setattr(
        modelprep.prep, "cached_result", lambda _req: PrepResult("k" * 64, tmp_path / "model.tflite", edited, True)
    )
    monkeypatch.setattr(iac.review, "served_metadata", lambda _url, _spec: served)
    changes, missing = iac.review.model_diff(load_resolved(spec_file))
    assert missing is None
    rows = {c.field: (c.deployed, c.edited, c.changed) for c in changes}
    assert rows["variant"] == ("litert-int8", "litert-dynamic", True)
    assert rows["artifact bytes"] == ("13", "11", True)
    assert rows["accuracy"] == ("0.99", "0.98", True)
    assert rows["artifact sha256"] == ("a" * 12, "c" * 12, True)
    # The signature is read from the report on both sides, not parsed back from TF Serving's metadata.
    assert rows["input signature"] == ("pixels[64]:float32", "pixels[64]:float32", False)
    assert rows["output signature"] == ("output_0[10]:float32", "output_0[10]:float32", False)


def test_diff_says_nothing_of_a_signature_an_older_server_did_not_report(
    spec_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import iac.review
    import modelprep.prep
    from iac.spec.load import load_resolved
    from modelprep.prep import PrepResult

    report = passing_report()
    older = report.served().model_dump(mode="json", exclude={"inputs", "outputs"})
    monkeypatch.setattr(
        modelprep.prep, "cached_result", lambda _req: PrepResult("k" * 64, tmp_path / "model.tflite", report, True)
    )
    monkeypatch.setattr(iac.review, "served_metadata", lambda _url, _spec: {"modelstack": older})
    rows = {c.field: (c.deployed, c.edited) for c in iac.review.model_diff(load_resolved(spec_file))[0]}
    assert rows["variant"] == ("litert-int8", "litert-int8")
    assert rows["input signature"] == ("—", "pixels[64]:float32")


def test_cli_table_reads_the_typed_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from iac.cli import views

    views.print_report(passing_report(), tmp_path / "model.tflite", cached=True)
    text = capsys.readouterr().out
    assert "litert-int8" in text and "chosen" in text and "(cached)" in text


def test_artifact_outputs_come_from_the_report() -> None:
    from iac.deploy.artifact import OUTPUTS, outputs_of

    report = passing_report()
    outs: dict[str, Any] = outputs_of("/cache/model.tflite", report)
    assert set(outs) == set(OUTPUTS)
    assert (outs["variant"], outs["size_bytes"], outs["accuracy"]) == (
        report.variant,
        report.size_bytes,
        report.accuracy,
    )
    assert PrepReport.model_validate(outs["report"]) == report

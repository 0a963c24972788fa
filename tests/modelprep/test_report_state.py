"""The prep report through the real Pulumi engine's state: the ModelArtifact provider returns it, the
engine stores it (every number a float on the way back to Python), and `PrepReport.model_validate`
gives back the same report, ints as ints.

No TensorFlow: the prep result is put in a temporary cache first, so the provider's prep is a
cache hit. Needs `.tools/bin/pulumi` and the plugin wrappers from `scripts/pulumi_plugins.sh`.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from iac.spec.models import Optimize, Quantization
from modelprep.cache import OUTPUTS, REPORT, Cache
from modelprep.prep import report_json
from modelprep.report import Measure, Notes, PrepReport, TensorSignature
from modelprep.request import PrepRequest, prep_key

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "bin"
PULUMI = TOOLS_BIN / "pulumi"

pytestmark = [pytest.mark.pulumi, pytest.mark.timeout(300)]

PROGRAM = """\
import json
from pathlib import Path

import pulumi

from iac.deploy.artifact import ModelArtifact
from modelprep.report import PrepReport

given = json.loads(Path("given.json").read_text())
expected = PrepReport.model_validate_json(Path("report.json").read_text())
artifact = ModelArtifact("digits-artifact", key=given["key"], request=given["request"])
raw = artifact.report
typed = artifact.typed_report
pulumi.export("report", raw)
pulumi.export("size_bytes", artifact.size_bytes)
# What the program sees: state hands numbers back as floats; the typed report makes them ints again.
pulumi.export("raw_size_type", raw.apply(lambda r: type(r["size_bytes"]).__name__))
pulumi.export("typed_size_type", typed.apply(lambda r: type(r.size_bytes).__name__))
pulumi.export("typed_equal", typed.apply(lambda r: r == expected and r.model_dump_json() == expected.model_dump_json()))
"""


def _report(key: str) -> PrepReport:
    """A report with every kind of value: ints, integral floats, fractions, notes, None fields."""
    common: dict[str, Any] = {"metric": "accuracy", "threads": 1, "latency_calls": 20_000}
    keras = Measure(
        name="keras-predict",
        runtime="keras",
        technique="baseline",
        quantization="none",
        size_bytes=1_056_871,
        gzip_bytes=980_000,
        accuracy=0.991111,
        latency_p50_us=31_000.0,
        latency_p99_us=35_123.45,
        throughput_per_s=1000.0,
        baseline=True,
        accuracy_drop=0.0,
        passed_gate=True,
        **common,
    )
    reference = Measure(
        name="litert-float32",
        runtime="litert",
        technique="ptq",
        quantization="none",
        artifact_file="model.tflite",
        sha256="c" * 64,
        size_bytes=342_124,
        gzip_bytes=315_000,
        accuracy=1.0,
        outputs_sha256="d" * 64,
        latency_p50_us=14.0,
        latency_p99_us=20.5,
        throughput_per_s=123_456.7,
        baseline=True,
        accuracy_drop=-0.008889,
        passed_gate=True,
        **common,
    )
    chosen = Measure(
        name="pruned-int8",
        runtime="litert",
        technique="pruned",
        quantization="int8",
        artifact_file="model.tflite",
        sha256="a" * 64,
        size_bytes=101_880,
        gzip_bytes=28_001,
        accuracy=0.988889,
        outputs_sha256="e" * 64,
        latency_p50_us=8.0,
        latency_p99_us=9.25,
        throughput_per_s=250_000.0,
        notes=Notes(sparsity=0.88, begin_step=0, end_step=70, frequency=10, steps=100, float_ops=["CUMSUM"]),
        accuracy_drop=0.002222,
        passed_gate=True,
        chosen=True,
        **common,
    )
    return PrepReport.of(
        key=key,
        metric="accuracy",
        top_k=5,
        objective="smallest",
        max_accuracy_drop=0.01,
        baseline_accuracy=0.991111,
        model_sha256="b" * 64,
        threads=1,
        evaluation_samples=360,
        inputs=[TensorSignature(name="user_id", shape=[1], dtype="int32"), TensorSignature(name="pixels", shape=[64])],
        outputs=[TensorSignature(name="output_0", shape=[10])],
        baselines=[keras, reference],
        variants=[chosen],
        choice="smallest artifact (101,880 bytes) among 1 passing candidates",
    )


def _pulumi(project: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [str(PULUMI), *args, "--non-interactive", "--color", "never"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, (
        f"pulumi {' '.join(args)} exited {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    )
    return run


def test_the_report_survives_pulumi_state_with_its_types(tmp_path: Path) -> None:
    for name in ("pulumi", "pulumi-language-python", "pulumi-resource-pulumi-python"):
        if not os.access(TOOLS_BIN / name, os.X_OK):
            pytest.fail(
                f"{TOOLS_BIN / name} missing: run the project's setup (scripts/pulumi_cli.sh, scripts/pulumi_plugins.sh)"
            )
    files = tmp_path / "files"
    files.mkdir()
    for name in ("digits.keras", "calibration.npz", "evaluation.npz"):
        (files / name).write_bytes(name.encode())  # prep_key hashes bytes only
    request = PrepRequest(
        model_path=str(files / "digits.keras"),
        calibration_path=str(files / "calibration.npz"),
        evaluation_path=str(files / "evaluation.npz"),
        input_name="pixels",
        sample_shape=(64,),
        optimize=Optimize(quantization=Quantization.int8),
    )
    key = prep_key(request)
    report = _report(key)
    cache_root = tmp_path / "cache"
    Cache(cache_root).put(key, {"model.tflite": b"tflite", OUTPUTS: b"npy", REPORT: report_json(report).encode()})

    project = tmp_path / "project"
    project.mkdir()
    (tmp_path / "state").mkdir()
    (project / "Pulumi.yaml").write_text(
        f"name: report-state\nruntime: python\nbackend:\n  url: file://{tmp_path / 'state'}\n"
    )
    (project / "__main__.py").write_text(PROGRAM)
    (project / "given.json").write_text(
        json.dumps({"key": key, "request": request.model_dump(mode="json", exclude={"locations"})})
    )
    (project / "report.json").write_text(report.model_dump_json())
    env = {
        **os.environ,
        "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ['PATH']}",
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
        "PULUMI_CONFIG_PASSPHRASE": "report-state-test",
        "PULUMI_SKIP_UPDATE_CHECK": "1",
        "MODELSTACK_CACHE": str(cache_root),
    }

    _pulumi(project, env, "stack", "init", "dev")
    _pulumi(project, env, "up", "--yes", "--skip-preview")
    _pulumi(project, env, "refresh", "--yes", "--skip-preview")  # the provider's read hands the stored report back
    outputs = json.loads(_pulumi(project, env, "stack", "output", "--json").stdout)

    assert outputs["raw_size_type"] == "float", "the engine's state turns ints into floats (why the report is typed)"
    assert outputs["typed_size_type"] == "int" and outputs["typed_equal"] is True
    back = PrepReport.model_validate(outputs["report"])
    assert back == report and back.model_dump_json() == report.model_dump_json()
    assert (
        type(back.size_bytes) is int
        and type(back.chosen.notes.steps) is int
        and type(back.baselines[1].accuracy) is float
    )
    assert outputs["size_bytes"] == report.size_bytes
    state = json.loads(_pulumi(project, env, "stack", "export").stdout)
    stored = next(r["outputs"] for r in state["deployment"]["resources"] if r["urn"].endswith("digits-artifact"))
    assert PrepReport.model_validate(stored["report"]) == report
    _pulumi(project, env, "destroy", "--yes", "--skip-preview")

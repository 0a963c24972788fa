"""Render: golden files for what the templates produce, and byte-identical output for the same inputs.

Regenerate the golden files after an intended template change with:
    UPDATE_GOLDEN=1 python -m pytest tests/build/test_render.py
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from prep_reports import passing_report

from iac.build.render import render
from iac.spec.load import load_resolved

GOLDEN = Path(__file__).parent / "golden" / "digits"
SPECS = Path(__file__).resolve().parents[1] / "fixtures" / "specs"
RENDERED = ("Dockerfile", ".dockerignore", "serving.json", "requirements.txt")
REPORT = passing_report()


@pytest.fixture()
def inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    example = tmp_path / "example"
    for sub in ("model", "data"):
        (example / sub).mkdir(parents=True)
    (example / "model" / "digits.keras").write_bytes(b"k")
    for name in ("calibration", "evaluation"):
        (example / "data" / f"{name}.npz").write_bytes(b"d")
    shutil.copy(SPECS / "valid_full.yaml", example / "model.yaml")
    artifact = tmp_path / "model.tflite"
    artifact.write_bytes(b"tflite-bytes\n")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for requirement in _pinned("requirements.txt") | _pinned("requirements-onnx.txt"):
        name = requirement.replace("==", "-").replace("-", "_", requirement.count("-")) + "-py3-none-any.whl"
        (wheels / name).write_bytes(name.encode())
    return example / "model.yaml", artifact, wheels


def _pinned(requirements: str) -> set[str]:
    text = (Path(__file__).resolve().parents[2] / "serving" / requirements).read_text()
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


def _render(inputs: tuple[Path, Path, Path], out: Path) -> list[Path]:
    spec, artifact, wheels = inputs
    return render(load_resolved(spec), artifact, REPORT, out, wheelhouse=wheels)


def test_rendered_files_match_golden(inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "context"
    _render(inputs, out)
    for name in RENDERED:
        golden = GOLDEN / name
        if os.environ.get("UPDATE_GOLDEN"):
            golden.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / name, golden)
        assert (out / name).read_bytes() == golden.read_bytes(), f"{name} differs from {golden}"


def test_context_is_complete(inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "context"
    files = {p.relative_to(out).as_posix() for p in _render(inputs, out)}
    assert {
        "Dockerfile",
        "serving.json",
        "model/model.tflite",
        "app/serving/server.py",
        "app/serving/runtime.py",
    } <= files
    assert sum(1 for f in files if f.startswith("wheels/")) == len(_pinned("requirements.txt"))
    assert (out / "model" / "model.tflite").read_bytes() == b"tflite-bytes\n"
    dockerfile = (out / "Dockerfile").read_text()
    assert "--no-index" in dockerfile and "USER 10001:10001" in dockerfile and "HEALTHCHECK" in dockerfile
    assert "tensorflow" not in (out / "requirements.txt").read_text().lower()


def test_same_inputs_give_byte_identical_context(inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    first = _render(inputs, tmp_path / "a")
    second = _render(inputs, tmp_path / "b")
    rel = lambda files, root: {p.relative_to(root).as_posix(): p.read_bytes() for p in files}  # noqa: E731
    assert rel(first, tmp_path / "a") == rel(second, tmp_path / "b")


def test_render_replaces_stale_files(inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "context"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    _render(inputs, out)
    assert not (out / "stale.txt").exists()


def test_onnx_artifact_gets_the_onnx_runtime_and_only_its_wheels(
    inputs: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    spec, artifact, wheels = inputs
    out = tmp_path / "context"
    report = passing_report(runtime="onnx", artifact_file="model.onnx", name="onnx-dynamic", quantization="dynamic")
    files = {
        p.relative_to(out).as_posix() for p in render(load_resolved(spec), artifact, report, out, wheelhouse=wheels)
    }
    assert "model/model.onnx" in files and "model/model.tflite" not in files
    assert "onnxruntime==" in (out / "requirements.txt").read_text()
    shipped = {f.split("/")[1].split("-")[0] for f in files if f.startswith("wheels/")}
    assert "onnxruntime" in shipped and "ai_edge_litert" not in shipped
    config = json.loads((out / "serving.json").read_text())
    assert config["runtime"] == "onnx" and config["artifact"] == "/app/model/model.onnx"


def test_the_models_family_names_the_images_packages() -> None:
    # Not the input's dtype: the family says which packages run each of its runtimes.
    from types import SimpleNamespace

    from iac.build.render import SERVING_PACKAGE, requirements_file
    from iac.spec.models import ModelFormat
    from modelprep.families import FAMILIES, family

    def chosen(fmt: ModelFormat, runtime: str) -> str:
        spec = SimpleNamespace(model_format=fmt)
        return requirements_file(spec, passing_report(runtime=runtime)).name  # type: ignore[arg-type]

    assert chosen(ModelFormat.keras, "litert") == "requirements.txt"
    assert chosen(ModelFormat.keras, "onnx") == "requirements-onnx.txt"
    assert chosen(ModelFormat.huggingface, "onnx") == "requirements-text.txt"
    assert chosen(ModelFormat.gguf, "llama.cpp") == "requirements-llm.txt"
    assert chosen(ModelFormat.ctranslate2, "ctranslate2") == "requirements-speech.txt"
    with pytest.raises(ValueError, match="names no serving image for runtime 'litert'"):
        chosen(ModelFormat.huggingface, "litert")
    for name in FAMILIES:  # every runtime a family's variants run on has its image
        found = family(name)
        assert {v.runtime for v in found.catalogue.values()} <= set(found.requirements), name
        assert all((SERVING_PACKAGE / file).is_file() for file in found.requirements.values()), name


def test_missing_wheels_are_named(inputs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from iac.spec.errors import UserError

    spec, artifact, wheels = inputs
    next(wheels.glob("numpy-*.whl")).unlink()
    with pytest.raises(UserError, match="lacks .*numpy.*make setup"):
        render(load_resolved(spec), artifact, REPORT, tmp_path / "context", wheelhouse=wheels)


def test_proxy_config_matches_golden() -> None:
    from iac.build.proxy_config import nginx_conf, upstream_conf

    rendered = {"nginx.conf": nginx_conf("digits", 2), "upstream.conf": upstream_conf(["r-b", "r-a"], 8501)}
    for name, text in rendered.items():
        golden = GOLDEN / name
        if os.environ.get("UPDATE_GOLDEN"):
            golden.write_text(text)
        assert text == golden.read_text(), f"{name} differs from {golden}"
    assert "8080;" in rendered["nginx.conf"], "no reuseport: its sockets reset queued connections on reload"


def test_the_grpc_transport_sources_are_part_of_the_context_key() -> None:
    """Its wheel is rebuilt with the same name and version when they change: the sources stand for it."""
    from iac.build.render import context_inputs

    sources = context_inputs()["sources"]
    for name in ("native/grpc_front/src/lib.rs", "native/grpc_front/Cargo.lock", "native/grpc_front/Cargo.toml"):
        assert name in sources and len(sources[name]) == 64

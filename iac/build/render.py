"""render(spec, artifact, out_dir): a complete Docker build context you can inspect and build
by hand with `docker build DIR`. Same inputs, byte-identical output."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from iac.build.templating import TEMPLATES, render_template
from iac.spec.errors import UserError
from iac.spec.models import ResolvedSpec
from modelprep.report import PrepReport

REPO = Path(__file__).resolve().parents[2]
SERVING_PACKAGE = REPO / "serving"
GRPC_TRANSPORT = REPO / "native" / "grpc_front"  # built into the wheelhouse (scripts/grpc_front.sh)
SERVING_UID = 10001
CONTEXT_VERSION = 1  # bump when the layout of the context changes


def default_wheelhouse() -> Path:
    return Path(os.environ.get("MODELSTACK_WHEELHOUSE") or REPO / ".cache" / "wheelhouse")


def serving_config(spec: ResolvedSpec, report: PrepReport, artifact: Path | None = None) -> dict[str, Any]:
    """What the server reads at start-up (serving/config.py); its `metadata` is what /metadata shows.
    The inputs are the spec's signature unless the task's serving family takes none; the drain on SIGTERM
    is what the model family says the chosen variant needs (`artifact`: its file), else the server's."""
    from modelprep.families import serving_needs
    from serving.families import takes_inputs

    s = spec.spec
    task = spec.task.value
    needs = serving_needs(spec, report, artifact) if artifact is not None else None
    return {
        **s.serving.model_dump(mode="json"),  # every setting, validated by the spec against the server's own bounds
        "model_name": s.name,
        "artifact": f"/app/model/{artifact_name(report)}",
        "runtime": report.runtime,
        "task": task,
        "host": "0.0.0.0",
        "inputs": [_served_input(t.name, list(t.shape or []), t.dtype.value, report) for t in spec.inputs]
        if takes_inputs(task)
        else [],
        "metadata": report.served().model_dump(mode="json"),
        **({"drain_timeout_s": needs.drain_s} if needs is not None else {}),
    }


def _served_input(name: str, shape: list[int], dtype: str, report: PrepReport) -> dict[str, Any]:
    """One input of serving.json: the spec's signature, and the id range prep read from the model."""
    found = {t.name: t.range for t in report.inputs or []}.get(name)
    return {"name": name, "shape": shape, "dtype": dtype, **({"range": [int(v) for v in found]} if found else {})}


def render(
    spec: ResolvedSpec, artifact: Path, report: PrepReport, out_dir: Path, wheelhouse: Path | None = None
) -> list[Path]:
    """Write the build context into `out_dir` (replacing what was there); returns its files."""
    wheelhouse = wheelhouse or default_wheelhouse()
    requirements = requirements_file(spec, report)
    wheels = wheels_for(requirements, wheelhouse)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    context = {
        "name": spec.spec.name,
        "base_image": spec.spec.deploy.base_image,
        "port": spec.spec.serving.port,
        "grpc_port": spec.spec.serving.grpc_port,
        "uid": SERVING_UID,
        "artifact_sha256": report.artifact_sha256,
        "variant": report.variant,
    }
    files = {
        "Dockerfile": render_template("Dockerfile.j2", **context).encode(),
        ".dockerignore": render_template("dockerignore.j2", **context).encode(),
        "serving.json": (json.dumps(serving_config(spec, report, artifact), indent=2, sort_keys=True) + "\n").encode(),
        "requirements.txt": requirements.read_bytes(),
        **artifact_files(artifact, report),
    }
    for source in server_sources():
        files[f"app/serving/{source.relative_to(SERVING_PACKAGE).as_posix()}"] = source.read_bytes()
    written = [_write(out_dir / name, content) for name, content in sorted(files.items())]
    for wheel in wheels:
        target = out_dir / "wheels" / wheel.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(wheel, target)
        written.append(target)
    return written


def artifact_name(report: PrepReport) -> str:
    return Path(report.artifact_file).name


def artifact_files(artifact: Path, report: PrepReport) -> dict[str, bytes]:
    """The artifact under model/: one file, or a folder (e.g. a model's weights, tokenizer and
    settings) with every file in it, at the same path the server is given either way."""
    name = f"model/{artifact_name(report)}"
    if not artifact.is_dir():
        return {name: artifact.read_bytes()}
    inside = sorted(p for p in artifact.rglob("*") if p.is_file())
    return {f"{name}/{p.relative_to(artifact).as_posix()}": p.read_bytes() for p in inside}


def requirements_file(spec: ResolvedSpec, report: PrepReport) -> Path:
    """The pinned packages of the chosen variant's runtime, as the model's family names them (the
    image carries one runtime: the one prep measured the chosen variant with)."""
    from modelprep.families import family_of_format

    family = family_of_format(spec.model_format.value)
    try:
        return SERVING_PACKAGE / family.requirements[report.runtime]
    except KeyError:
        raise ValueError(
            f"the {family.name} family names no serving image for runtime {report.runtime!r} "
            f"(it has {', '.join(family.requirements)})"
        ) from None


def wheels_for(requirements: Path, wheelhouse: Path) -> list[Path]:
    """The wheelhouse's wheels for the pinned packages in `requirements` (every transitive
    dependency is pinned there, so nothing else is needed and nothing else is copied)."""
    wanted = {
        _normalize(line.split("==")[0])
        for line in requirements.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    wheels = sorted(w for w in wheelhouse.glob("*.whl") if _normalize(w.name.split("-")[0]) in wanted)
    found = {_normalize(w.name.split("-")[0]) for w in wheels}
    if found != wanted:
        raise UserError.single(
            str(wheelhouse),
            "",
            f"the wheelhouse lacks {', '.join(sorted(wanted - found))}",
            "run `make setup` (scripts/wheelhouse.sh downloads the serving image's packages)",
        )
    return wheels


def _normalize(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def server_sources() -> list[Path]:
    """The server's Python files (subpackages included): what the image runs, all of it."""
    return sorted(p for p in SERVING_PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def context_inputs() -> dict[str, Any]:
    """Everything besides the spec and the artifact that shapes the context: hashed by the
    Pulumi program so a template, server or wheel change shows up in `pulumi preview`."""
    from modelprep.hashing import file_sha256

    # The gRPC transport's wheel is built here with a fixed version: its sources stand for it.
    transport = [
        *(GRPC_TRANSPORT / name for name in ("Cargo.toml", "Cargo.lock", "pyproject.toml")),
        *(GRPC_TRANSPORT / "src").glob("*.rs"),
    ]
    sources = sorted(
        [*TEMPLATES.glob("*.j2"), *server_sources(), *SERVING_PACKAGE.glob("requirements*.txt"), *transport]
    )
    return {
        "version": CONTEXT_VERSION,
        "sources": {str(p.relative_to(REPO)): file_sha256(p) for p in sources},
        "wheels": sorted(p.name for p in default_wheelhouse().glob("*.whl")),
    }


def _write(path: Path, content: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path

"""Render with a folder artifact (a model that is several files: weights, tokenizer, settings): the whole
folder under model/, the server pointed at it, the runtime's own requirements and wheels; and the prep
side of it: the cache writes a family's folder, whose sha256 the family can state before it is written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from prep_reports import passing_report

from harness.specs import speech_spec
from iac.build.render import render
from iac.spec.load import load_resolved
from modelprep.hashing import file_sha256, tree_sha256

SERVING = Path(__file__).resolve().parents[2] / "serving"


def _pinned(requirements: str) -> set[str]:
    text = (SERVING / requirements).read_text()
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


def _example(tmp_path: Path) -> Path:
    """A speech example folder: the deploy tests' spec, a CTranslate2 model folder, data."""
    example = tmp_path / "example"
    for sub in ("model", "data"):
        (example / sub).mkdir(parents=True)
    for name in ("model.bin", "config.json", "tokenizer.json", "vocabulary.txt"):  # format: ctranslate2
        (example / "model" / name).write_bytes(b"{}")
    (example / "data" / "evaluation.npz").write_bytes(b"d")
    (example / "model.yaml").write_text(speech_spec())
    return example


def test_folder_artifact_is_shipped_whole_with_its_runtime(tmp_path: Path) -> None:
    example = _example(tmp_path)
    folder = tmp_path / "whisper"
    (folder / "sub").mkdir(parents=True)
    files = {"model.bin": b"weights", "tokenizer.json": b"{}", "speech.json": b'{"beam_size": 1}', "sub/x.txt": b"x"}
    for name, content in files.items():
        (folder / name).write_bytes(content)
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for requirement in _pinned("requirements-speech.txt"):
        name = requirement.replace("==", "-").replace("-", "_", requirement.count("-")) + "-py3-none-any.whl"
        (wheels / name).write_bytes(name.encode())
    report = passing_report(runtime="ctranslate2", artifact_file="whisper", name="ct2-int8", quantization="int8")

    out = tmp_path / "context"
    written = {
        p.relative_to(out).as_posix()
        for p in render(load_resolved(example / "model.yaml"), folder, report, out, wheelhouse=wheels)
    }

    assert {f"model/whisper/{name}" for name in files} <= written
    assert all((out / "model" / "whisper" / name).read_bytes() == content for name, content in files.items())
    assert file_sha256(out / "model" / "whisper") == file_sha256(folder)
    assert json.loads((out / "serving.json").read_text())["artifact"] == "/app/model/whisper"
    requirements = (out / "requirements.txt").read_text()
    assert "faster-whisper==" in requirements and "ai-edge-litert" not in requirements
    shipped = {f.split("/")[1].split("-")[0] for f in written if f.startswith("wheels/")}
    assert {"faster_whisper", "ctranslate2", "av"} <= shipped and "ai_edge_litert" not in shipped


def test_a_replica_needs_the_measured_memory_and_drains_its_held_transcriptions(tmp_path: Path) -> None:
    """The speech family's serving needs: the chosen variant's resident memory, the server and one
    request's audio at serving.max_audio_seconds, +25%; a drain covering two such requests at the measured
    real-time factor (bounded), which serving.json and the proxy's read timeout follow."""
    from iac.build.render import serving_config
    from iac.deploy.needs import read_timeout_s
    from modelprep.families import serving_needs
    from modelprep.report import Notes

    spec = load_resolved(_example(tmp_path) / "model.yaml")  # serving.max_audio_seconds: 120

    def report(rtf: float) -> object:
        notes = Notes(resident_bytes=180 * 2**20, real_time_factor=rtf)
        return passing_report(runtime="ctranslate2", artifact_file="whisper", name="ct2-int8", notes=notes)

    needs = serving_needs(spec, report(0.2), tmp_path)
    assert needs is not None
    audio = 120 * 3 * 16_000 * 4
    assert needs.memory_bytes == -(-(180 * 2**20 + 160 * 2**20 + audio) * 5 // 4 // 2**20) * 2**20
    assert needs.memory_detail.startswith("model resident 180 MiB + server 160 MiB + 120 s of audio 22 MiB")
    assert needs.drain_s == 48.0  # 2 held x 120 s x 0.2
    assert serving_config(spec, report(0.2), tmp_path)["drain_timeout_s"] == 48.0
    slow = serving_needs(spec, report(3.0), tmp_path)
    assert slow is not None and slow.drain_s == 600.0 and read_timeout_s(slow) == 600


def test_the_stacks_endpoint_is_the_transcription_route(tmp_path: Path) -> None:
    from iac.deploy.targets.docker.settings import endpoint

    assert endpoint(load_resolved(_example(tmp_path) / "model.yaml")) == "http://127.0.0.1:8501/v1/audio/transcriptions"


def test_tree_sha256_is_the_written_folders(tmp_path: Path) -> None:
    from modelprep.cache import Cache

    files = {"model.bin": b"w" * 10, "a/b.txt": b"b", "a-c.txt": b"c", "speech.json": b"{}"}
    entry = Cache(tmp_path).put("k" * 64, {f"whisper/{name}": content for name, content in files.items()})
    stated = tree_sha256({name: hashlib.sha256(content).hexdigest() for name, content in files.items()})
    assert file_sha256(entry / "whisper") == stated

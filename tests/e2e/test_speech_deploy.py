"""Speech recognition on the Docker target with the real Pulumi engine and Docker Engine: `pulumi up` of a
Whisper tiny.en stack (the packaged model, 3 synthetic evaluation clips, one candidate: CI-cheap), one
evaluation clip transcribed through the proxy with the official `openai` client and over the V2 gRPC
service with tritonclient, the words checked, `pulumi destroy`, nothing of the stack left.

The artifact is a folder (the CTranslate2 model's files and the variant's speech.json): the image's label
carries the folder's sha256, the same as the prep cache's folder hashes to."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from harness.processes import free_port
from harness.sandbox import CALLER_ONLY, PULUMI, get, healers, leftovers
from harness.specs import speech_spec

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.pulumi, pytest.mark.speech, pytest.mark.timeout(1500)]

REPO = Path(__file__).resolve().parents[2]
STACK_FILES = REPO / "stacks" / "whisper"  # Pulumi.yaml and __main__.py (never its model.yaml)


class SpeechStack:
    """`root/whisper` (the project, a copy of stacks/whisper's program), `root/state` (its file backend)."""

    def __init__(self, root: Path) -> None:
        from modelprep.examples.minilm import link_tree
        from modelprep.examples.whisper import whisper_dir
        from modelprep.families.speech import corpus

        self.dir = root / "whisper"
        self.dir.mkdir()
        (root / "state").mkdir()
        pulumi_yaml = (STACK_FILES / "Pulumi.yaml").read_text()
        pulumi_yaml = pulumi_yaml.replace("file://./.pulumi-state", f"file://{root / 'state'}")
        (self.dir / "Pulumi.yaml").write_text(pulumi_yaml)
        shutil.copy(STACK_FILES / "__main__.py", self.dir / "__main__.py")
        self.port, self.grpc_port = free_port(), free_port()
        (self.dir / "model.yaml").write_text(speech_spec(port=self.port, grpc_port=self.grpc_port))
        link_tree(whisper_dir(), self.dir / "model")
        corpus.save(corpus.make(3), self.dir / "data" / "evaluation.npz")
        self.name = f"t{uuid.uuid4().hex[:8]}"
        self.owner = f"whisper/{self.name}/whisper"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in CALLER_ONLY},
            "PATH": f"{PULUMI.parent}:{os.environ.get('PATH', '')}",
            "PULUMI_CONFIG_PASSPHRASE": "modelstack-sandbox",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_HOME": str(root / "pulumi-home"),
        }

    def pulumi(self, *args: str, timeout: float = 1200) -> str:
        run = subprocess.run(
            [str(PULUMI), *args, "--non-interactive", "--color", "never"],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if run.returncode != 0:
            raise RuntimeError(f"pulumi {' '.join(args)} failed:\n{run.stdout[-4000:]}\n{run.stderr[-3000:]}")
        return run.stdout


def test_whisper_up_transcribe_with_openai_destroy(tmp_path: Path) -> None:
    import docker
    from openai import OpenAI

    from iac.spec.load import load_resolved
    from modelprep.families.speech import corpus
    from modelprep.families.speech.wer import wer
    from modelprep.hashing import file_sha256
    from modelprep.prep import cached_result
    from modelprep.request import prep_request

    stack = SpeechStack(tmp_path)
    stack.pulumi("stack", "init", stack.name)
    timings: dict[str, float] = {}
    try:
        started = time.monotonic()
        stack.pulumi("up", "--yes", "--skip-preview")
        timings["pulumi up (prep, build, roll out)"] = time.monotonic() - started
        outputs = json.loads(stack.pulumi("stack", "output", "--json"))
        assert outputs["variant"] == "ct2-int8"

        # The artifact is the prep cache's folder; the image carries its sha256.
        prepped = cached_result(prep_request(load_resolved(stack.dir / "model.yaml")))
        assert prepped is not None and prepped.artifact_path.is_dir()
        assert {p.name for p in prepped.artifact_path.iterdir()} >= {"model.bin", "tokenizer.json", "speech.json"}
        sha = file_sha256(prepped.artifact_path)
        assert prepped.report.artifact_sha256 == sha
        image = docker.from_env().images.get(outputs["image_id"])
        assert image.labels["org.modelstack.artifact-sha256"] == sha
        served = get(f"{stack.base_url}/v1/models/whisper/metadata")["metadata"]["modelstack"]
        assert (served["variant"], served["artifact_sha256"]) == ("ct2-int8", sha)

        clips = corpus.load(stack.dir / "data" / "evaluation.npz")
        client = OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
        started = time.monotonic()
        answer = client.audio.transcriptions.create(
            model="whisper", file=("clip.wav", corpus.wav_bytes(clips.clip(0)), "audio/wav")
        )
        timings["one transcription"] = time.monotonic() - started
        reference = clips.clips[0].text
        assert wer([reference], [answer.text]) <= 0.25, (reference, answer.text)

        # The same clip over the V2 gRPC service, through the proxy's gRPC port (tritonclient's defaults).
        import tritonclient.grpc as grpcclient

        assert outputs["grpc_target"] == f"127.0.0.1:{stack.grpc_port}"
        audio = grpcclient.InferInput("audio", [1], "BYTES")
        audio.set_data_from_numpy(np.array([corpus.wav_bytes(clips.clip(0))], dtype=object))
        result = grpcclient.InferenceServerClient(outputs["grpc_target"]).infer("whisper", [audio])
        assert wer([reference], [result.as_numpy("text")[0].decode()]) <= 0.25
        print({name: round(seconds, 1) for name, seconds in timings.items()})
    finally:
        stack.pulumi("destroy", "--yes")
    assert leftovers(stack.owner) == {"containers": [], "networks": [], "images": []}
    assert healers(stack.owner) == []

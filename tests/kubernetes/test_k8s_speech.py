"""A speech model on the Kubernetes target with a real pod (the Docker e2e test's spec, its deploy section
pointed at the cluster): Whisper tiny.en's folder artifact in the image, the pod's memory and grace
period from what the speech family says a replica needs, one evaluation clip transcribed through the
Service with the official `openai` client and again over the V2 gRPC service with tritonclient."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from specs import one_pod_stack, pod_and_needs

pytestmark = [pytest.mark.k8s, pytest.mark.pulumi, pytest.mark.docker, pytest.mark.e2e, pytest.mark.speech]

NAMESPACE = "models"


def test_whisper_on_a_real_pod(real_node: Any, tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient
    from openai import OpenAI

    from harness.specs import speech_spec
    from iac.deploy.targets.kubernetes.settings import PRESTOP_DELAY_S, base_url
    from modelprep.examples.minilm import link_tree
    from modelprep.examples.whisper import whisper_dir
    from modelprep.families.speech import corpus
    from modelprep.families.speech.wer import wer

    example = tmp_path / "example"
    example.mkdir()
    link_tree(whisper_dir(), example / "model")
    corpus.save(corpus.make(3), example / "data" / "evaluation.npz")
    (example / "model.yaml").write_text(speech_spec())
    stack = one_pod_stack(real_node, tmp_path, example, NAMESPACE)
    with stack.deployed():
        resolved, needs, pod = pod_and_needs(real_node, stack, NAMESPACE)
        assert needs is not None
        resources = pod.containers[0].resources
        assert resources.limits["memory"] == f"{math.ceil(needs.memory_bytes / 2**20)}Mi"
        assert pod.termination_grace_period_seconds >= PRESTOP_DELAY_S + math.ceil(needs.drain_s)

        clips = corpus.load(example / "data" / "evaluation.npz")
        reference, audio = clips.clips[0].text, corpus.wav_bytes(clips.clip(0))
        url = base_url(resolved)  # the Service's cluster IP, reachable from this node
        api = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)
        answer = api.audio.transcriptions.create(model="whisper", file=("clip.wav", audio, "audio/wav"))
        assert wer([reference], [answer.text]) <= 0.25, (reference, answer.text)

        tensor = grpcclient.InferInput("audio", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([audio], dtype=object))
        host = url.removeprefix("http://").rpartition(":")[0]
        result = grpcclient.InferenceServerClient(f"{host}:8001").infer("whisper", [tensor])
        assert wer([reference], [result.as_numpy("text")[0].decode()]) <= 0.25

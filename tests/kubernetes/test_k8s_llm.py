"""A text-generation model on the Kubernetes target with a real pod (the same spec as on Docker, its deploy
section pointed at the cluster): the tiny GGUF served by llama.cpp, the pod's memory requested and limited
at what the llm family computes (weights + KV cache + runtime) and its grace period covering the family's
drain; the official `openai` client chats through the Service, whole and streamed; a limit written below
the need is a located error at preview."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import pytest
from specs import one_pod_stack, pod_and_needs

pytestmark = [pytest.mark.k8s, pytest.mark.pulumi, pytest.mark.docker, pytest.mark.e2e, pytest.mark.llama]

NAMESPACE = "models"


def _chat(base_url: str, stream: bool) -> tuple[str, str | None]:
    from openai import OpenAI

    api = OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0, timeout=60)
    messages = [{"role": "user", "content": "hello world"}]
    if not stream:
        answer = api.chat.completions.create(model="chat", messages=messages, max_tokens=8, temperature=0)  # type: ignore[arg-type]
        return answer.choices[0].message.content or "", answer.choices[0].finish_reason
    text, finish = [], None
    for chunk in api.chat.completions.create(  # type: ignore[call-overload]
        model="chat", messages=messages, max_tokens=8, temperature=0, stream=True
    ):
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return "".join(text), finish


def test_chat_model_on_a_real_pod(real_node: Any, tmp_path: Path) -> None:
    from harness.specs import chat_spec
    from iac.deploy.targets.kubernetes.settings import PRESTOP_DELAY_S, base_url
    from modelprep.examples.smollm import TEXT
    from modelprep.families.llm import tiny

    example = tmp_path / "example"
    (example / "model").mkdir(parents=True)
    (example / "data").mkdir()
    tiny.build(example / "model" / "tiny.gguf", open_ended=True)  # every answer runs to max_tokens
    shutil.copyfile(TEXT, example / "data" / "evaluation.txt")
    (example / "model.yaml").write_text(chat_spec())
    stack = one_pod_stack(real_node, tmp_path, example, NAMESPACE)
    with stack.deployed():
        resolved, needs, pod = pod_and_needs(real_node, stack, NAMESPACE)
        assert needs is not None and 64 * 2**20 < needs.memory_bytes < 256 * 2**20
        wanted = f"{math.ceil(needs.memory_bytes / 2**20)}Mi"
        resources = pod.containers[0].resources
        assert resources.limits["memory"] == resources.requests["memory"] == wanted
        assert pod.termination_grace_period_seconds >= PRESTOP_DELAY_S + math.ceil(needs.drain_s)

        url = base_url(resolved)  # the Service's cluster IP, reachable from this node
        text, finish = _chat(url, stream=False)
        assert text and finish == "length"
        text, finish = _chat(url, stream=True)
        assert text and finish == "length"

        # A limit written below the need: preview fails at the field's line, naming the figure.
        stack.edit_kubernetes(
            resources={"requests": {"cpu": "100m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "64Mi"}}
        )
        preview = stack.run("preview", check=False)
        assert preview.returncode != 0
        said = preview.stdout + preview.stderr
        assert "deploy.resources.limits.memory: 64Mi is less than the" in said, said[-3000:]
        stack.edit_kubernetes(resources=None)

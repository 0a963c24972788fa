"""A text-generation stack through the real Pulumi engine and Docker Engine, with the tiny GGUF (no download):
`pulumi up` preps, builds the llama.cpp image and rolls the replica out; the official `openai` client chats
through the proxy, whole and streamed; a deploy.memory below the model's needs is a located error at
preview; a new variant rolls out under streaming clients with none failing; destroy leaves nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from harness.sandbox import REPO, Sandbox
from harness.specs import chat_spec

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.pulumi, pytest.mark.llama, pytest.mark.timeout(900)]


def client(stack: Sandbox) -> object:
    from openai import OpenAI

    return OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0, timeout=60)


def chat(stack: Sandbox, stream: bool) -> tuple[str, str | None]:
    """One greedy answer through the proxy: its text and finish reason. Greedy, since the open-ended model
    sampled at temperature 1 still ends about 5 in 100,000 tokens with end-of-generation (the rollout
    benchmark's first run, docs/llm.md): over the rollout's hundreds of streams, a failure now and then
    that no rollout caused."""
    messages = [{"role": "user", "content": "hello world"}]
    api = client(stack)
    if not stream:
        answer = api.chat.completions.create(model="chat", messages=messages, max_tokens=8, temperature=0)  # type: ignore[attr-defined]
        return answer.choices[0].message.content or "", answer.choices[0].finish_reason
    text, finish = [], None
    for chunk in api.chat.completions.create(model="chat", messages=messages, max_tokens=8, temperature=0, stream=True):  # type: ignore[attr-defined]
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
    return "".join(text), finish


def test_up_chat_stream_roll_destroy(chat_folder: Path, tmp_path: Path) -> None:
    from iac.deploy.needs import model_needs
    from iac.spec.load import load_resolved
    from modelprep.families.llm import tiny
    from modelprep.request import prep_key, prep_request

    # Open-ended: no end-of-text token can be sampled, so every answer runs to max_tokens, and a
    # stream that ends before it is one the rollout cut.
    model = chat_folder / "model" / "tiny.gguf"
    model.unlink()
    tiny.build(model, open_ended=True)
    spec_file = tmp_path / "chat.yaml"
    spec_file.write_text(chat_spec())
    (tmp_path / "stack").mkdir()
    stack = Sandbox(tmp_path / "stack", chat_folder, stack_files=REPO / "stacks" / "smollm", spec=spec_file)
    started = time.monotonic()
    with stack.deployed():
        up_s = time.monotonic() - started
        outputs = stack.outputs()
        assert outputs["variant"] == "gguf-source" and outputs["base_url"] == stack.base_url
        assert stack.metadata()["variant"] == "gguf-source"

        # The replica's memory limit is what the llm family computed (weights + KV cache + runtime).
        resolved = load_resolved(stack.dir / "model.yaml")
        needs = model_needs(resolved, prep_key(prep_request(resolved)))
        assert needs is not None and 64 * 2**20 < needs.memory_bytes < 256 * 2**20
        [replica] = stack.containers("model")
        assert replica.attrs["HostConfig"]["Memory"] == needs.memory_bytes

        text, finish = chat(stack, stream=False)
        assert text and finish == "length"
        text, finish = chat(stack, stream=True)
        assert text and finish == "length"

        # Written below the need: preview fails at deploy.memory's line, naming the figure.
        stack.edit_spec("  ready_timeout: 120\n", "  ready_timeout: 120\n  memory: 64Mi\n")
        preview = stack.run("preview", check=False)
        assert preview.returncode != 0
        assert f"model.yaml:15: deploy.memory: 64Mi is less than the {needs.memory_bytes // 2**20:,} MiB" in (
            preview.stdout + preview.stderr
        )
        stack.edit_spec("  memory: 64Mi\n", "")

        # A new variant rolls out while clients stream: none fails or ends early.
        failures: list[str] = []
        served = [0]
        stop = threading.Event()

        def stream_until_stopped() -> None:
            while not stop.is_set():
                try:
                    text, finish = chat(stack, stream=True)
                    if finish != "length" or not text:
                        failures.append(f"truncated: {finish!r} {text!r}")
                    served[0] += 1
                except Exception as exc:  # any failure the client sees counts
                    failures.append(f"{type(exc).__name__}: {exc}")

        stack.edit_spec("variants: [gguf-source]", "variants: [gguf-q8_0]")
        clients = [threading.Thread(target=stream_until_stopped) for _ in range(2)]
        for thread in clients:
            thread.start()
        rolled = time.monotonic()
        try:
            stack.pulumi("up", "--yes", "--skip-preview")
        finally:
            stop.set()
            for thread in clients:
                thread.join(60)
        roll_s = time.monotonic() - rolled
        assert stack.metadata()["variant"] == "gguf-q8_0"
        assert failures == [] and served[0] > 10, (failures[:5], served[0])
        assert len(stack.containers("model")) == 1
        print(f"up {up_s:.0f} s, rolling update {roll_s:.0f} s with {served[0]} streams, memory {needs.memory_detail}")

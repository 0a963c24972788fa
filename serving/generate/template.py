"""Chat messages to a prompt with the model's own template (``tokenizer.chat_template`` in the GGUF).

llama.cpp recognises the common templates (ChatML, Llama 2/3, Mistral, Gemma, Phi, ...) and applies
them natively; a template it does not know is rendered with Jinja2's sandbox, as the Hugging Face
tokenizers do. A model with no template gets ChatML (llama.cpp's default).
"""

from __future__ import annotations

import ctypes
from typing import Any


def apply_template(ll: Any, template: bytes | None, messages: list[tuple[str, str]]) -> str:
    """The prompt for ``messages`` ((role, content) pairs), ending where the assistant answers."""
    chat = (ll.llama_chat_message * len(messages))()
    keep = []  # the encoded strings must live until the call returns
    for i, (role, content) in enumerate(messages):
        r, c = role.encode(), content.encode()
        keep += [r, c]
        chat[i].role = r
        chat[i].content = c
    size = max(256, 2 * sum(len(x) for x in keep) + 256)
    for _ in range(2):
        buf = ctypes.create_string_buffer(size)
        n = ll.llama_chat_apply_template(template, chat, len(messages), True, buf, size)
        if n < 0:
            return _jinja(template, messages)
        if n <= size:
            return buf.raw[:n].decode("utf-8", "replace")
        size = n
    raise RuntimeError("llama_chat_apply_template kept asking for a larger buffer")


def _jinja(template: bytes | None, messages: list[tuple[str, str]]) -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    if template is None:
        raise ValueError("the model has no chat template and llama.cpp's default did not apply")
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template.decode("utf-8")).render(
        messages=[{"role": r, "content": c} for r, c in messages],
        add_generation_prompt=True,
        bos_token="",
        eos_token="",
    )

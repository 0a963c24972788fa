"""Request bodies to what the engine runs: every bad field is a 4xx that names it.

The OpenAI fields (chat and completions share the sampling ones) and the Open Inference
Protocol generate extension's ``text_input`` + ``parameters``. Fields this server does not act on
but that clients send routinely (``user``, ``frequency_penalty`` 0, ...) are accepted and
ignored; features it does not have (tools, logprobs, n > 1) are refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from serving.errors import ClientError, kind, show
from serving.generate.engine import Sampling

ROLES = ("system", "developer", "user", "assistant")
MAX_STOP = 4


@dataclass(frozen=True)
class Job:
    """A validated request: the messages or the prompt, the sampling, and how to answer."""

    sampling: Sampling
    messages: list[tuple[str, str]] | None = None
    prompt: str | None = None
    stream: bool = False
    include_usage: bool = False


def _bad(field: str, message: str) -> ClientError:
    return ClientError(400, f"{field}: {message}")


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ClientError(400, f"the request body must be a JSON object, got {kind(body)}")
    return body


def check_model(body: dict[str, Any], served: str) -> None:
    """The OpenAI ``model`` field must name the served model (404 otherwise)."""
    if "model" not in body:
        raise _bad("model", f"required; this server serves {show(served)}")
    model = body["model"]
    if not isinstance(model, str):
        raise _bad("model", f"must be a string, got {kind(model)}")
    if model != served:
        raise ClientError(404, f"model: {show(model)} is not served here; this server serves {show(served)}")


def chat(body: Any) -> Job:
    """``POST /v1/chat/completions``."""
    body = _object(body)
    if "messages" not in body:
        raise _bad("messages", "required: a non-empty list of {role, content} objects")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise _bad("messages", f"must be a list of {{role, content}} objects, got {kind(messages)}")
    if not messages:
        raise _bad("messages", "must not be empty")
    parsed = [_message(m, i) for i, m in enumerate(messages)]
    limit = _optional_int(body, "max_completion_tokens")
    if limit is None:
        limit = _optional_int(body, "max_tokens")
    stream, include_usage = _streaming(body)
    _refuse_unsupported(body)
    return Job(_sampling(body, limit), messages=parsed, stream=stream, include_usage=include_usage)


def completion(body: Any) -> Job:
    """``POST /v1/completions``: ``prompt`` is a string (or a list holding one)."""
    body = _object(body)
    if "prompt" not in body:
        raise _bad("prompt", "required: a string")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str):
        raise _bad("prompt", f"must be a string (or a list of one string), got {kind(prompt)}")
    stream, include_usage = _streaming(body)
    if body.get("echo") not in (None, False):
        raise _bad("echo", "is not supported; send false or leave it out")
    if body.get("suffix") not in (None, ""):
        raise _bad("suffix", "is not supported; leave it out")
    _refuse_unsupported(body)
    return Job(
        _sampling(body, _optional_int(body, "max_tokens")), prompt=prompt, stream=stream, include_usage=include_usage
    )


def generate(body: Any, stream: bool) -> Job:
    """The Open Inference Protocol generate extension: ``text_input`` and ``parameters``
    (sampling fields may also sit at the top level, as Triton accepts them)."""
    body = _object(body)
    if "text_input" not in body:
        raise _bad("text_input", "required: the prompt as a string")
    text = body["text_input"]
    if not isinstance(text, str):
        raise _bad("text_input", f"must be a string, got {kind(text)}")
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise _bad("parameters", f"must be an object, got {kind(parameters)}")
    merged = {k: v for k, v in body.items() if k not in ("text_input", "parameters", "id")} | parameters
    merged.pop("stream", None)
    return Job(_sampling(merged, _optional_int(merged, "max_tokens")), prompt=text, stream=stream)


def _message(item: Any, i: int) -> tuple[str, str]:
    where = f"messages[{i}]"
    if not isinstance(item, dict):
        raise _bad(where, f"must be an object with role and content, got {kind(item)}")
    role = item.get("role")
    if role not in ROLES:
        if role == "tool" or "tool_calls" in item:
            raise _bad(f"{where}.role", "tool messages are not supported (no tool calling here)")
        raise _bad(f"{where}.role", f"must be one of {', '.join(ROLES)}, got {show(role)}")
    if "content" not in item:
        raise _bad(f"{where}.content", "required: the message text")
    content = item["content"]
    if isinstance(content, str):
        return role, content
    if isinstance(content, list):  # content parts: text only
        texts = []
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                what = part.get("type") if isinstance(part, dict) else kind(part)
                raise _bad(
                    f"{where}.content[{j}]",
                    f"must be a text part {{type: text, text: ...}}; this model takes text only, got {show(what)}",
                )
            texts.append(part["text"])
        return role, "".join(texts)
    raise _bad(f"{where}.content", f"must be text (a string or a list of text parts), got {kind(content)}")


def _streaming(body: dict[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise _bad("stream", f"must be true or false, got {show(stream)}")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not isinstance(options, dict):
        raise _bad("stream_options", f"must be an object, got {kind(options)}")
    if not stream:
        raise _bad("stream_options", "is only allowed with stream: true")
    include = options.get("include_usage", False)
    if not isinstance(include, bool):
        raise _bad("stream_options.include_usage", f"must be true or false, got {show(include)}")
    return stream, include


def _refuse_unsupported(body: dict[str, Any]) -> None:
    n = body.get("n", 1)
    if n is not None and (isinstance(n, bool) or n != 1):
        raise _bad("n", f"only 1 is supported, got {show(n)}")
    if body.get("tools"):
        raise _bad("tools", "tool calling is not supported by this server")
    if body.get("logprobs") not in (None, False, 0):
        raise _bad("logprobs", "is not supported; send false or leave it out")


def _optional_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise _bad(name, f"must be a positive integer, got {show(value)}")
    return value


def _number(body: dict[str, Any], name: str, default: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(name, f"must be a number, got {show(value)}")
    return float(value)


def _sampling(body: dict[str, Any], max_tokens: int | None) -> Sampling:
    temperature = _number(body, "temperature", 1.0)
    if not 0.0 <= temperature <= 2.0:
        raise _bad("temperature", f"must be in [0, 2], got {show(body['temperature'])}")
    top_p = _number(body, "top_p", 1.0)
    if not 0.0 < top_p <= 1.0:
        raise _bad("top_p", f"must be in (0, 1], got {show(body['top_p'])}")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _bad("seed", f"must be an integer, got {show(seed)}")
    stop = body.get("stop")
    stops: tuple[str, ...]
    if stop is None:
        stops = ()
    elif isinstance(stop, str):
        stops = (stop,) if stop else ()
    elif isinstance(stop, list) and all(isinstance(s, str) and s for s in stop):
        if len(stop) > MAX_STOP:
            raise _bad("stop", f"at most {MAX_STOP} stop sequences, got {len(stop)}")
        stops = tuple(stop)
    else:
        raise _bad("stop", f"must be a string or a list of up to {MAX_STOP} non-empty strings, got {show(stop)}")
    return Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, stop=stops)

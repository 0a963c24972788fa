"""The family's routes: OpenAI-compatible chat/completions/models and the V2 generate extension.

A handler validates the body (``params``), renders and tokenizes the prompt, refuses one that
leaves no room in a sequence's context (both token counts in the message), and submits a
``Sequence``. Non-streaming answers are sent once the engine finishes it; streaming answers are
server-sent events written as the tokens arrive, and a client that hangs up cancels its sequence.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, cast

from serving import v2
from serving.errors import ClientError, encode_json, error_body
from serving.generate import params
from serving.generate.engine import Sequence
from serving.messages import Request, Response
from serving.routes import GET, POST, Route
from serving.tensors import parse_json

if TYPE_CHECKING:
    from serving.generate.engine import Engine
    from serving.state import ModelState

Reply = Callable[[Callable[[], Response]], None]
SSE = b"text/event-stream"
# A proxy in front (the Docker target's nginx) passes each event on as it comes instead of
# buffering the answer; clients and caches keep nothing.
SSE_HEADERS = (("X-Accel-Buffering", "no"), ("Cache-Control", "no-cache"))
_DONE = b"data: [DONE]\n\n"


Handler = Callable[["ModelState", Request, Reply], "Response | None"]
_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\[\]]*$")


def openai_errors(handler: Handler) -> Handler:
    """Client errors in OpenAI's shape, ``{"error": {"message", "type", "param", "code"}}``, which
    its clients read (they show only the status for any other body)."""

    def wrapped(state: ModelState, request: Request, reply: Reply) -> Response | None:
        try:
            return handler(state, request, reply)
        except ClientError as exc:
            field = exc.message.split(":", 1)[0]
            kind = "invalid_request_error" if exc.status < 500 else "server_error"
            body = {
                "error": {
                    "message": exc.message,
                    "type": kind,
                    "param": field if _FIELD.match(field) else None,
                    "code": "model_not_found" if exc.status == 404 else None,
                }
            }
            return Response(exc.status, encode_json(body).encode(), headers=exc.headers)

    return wrapped


def _engine(state: ModelState) -> Engine:
    return cast("Engine", state.require_ready())


def _prompt_tokens(engine: Engine, job: params.Job, field: str) -> list[int]:
    text = engine.chat_prompt(job.messages) if job.messages is not None else job.prompt or ""
    tokens = engine.tokenize(text)
    if not tokens:
        raise ClientError(400, f"{field}: the prompt is empty; send some text")
    if len(tokens) >= engine.context_length:
        raise ClientError(
            400,
            f"{field}: the prompt is {len(tokens)} tokens; a sequence's context holds "
            f"{engine.context_length} (context_length), which leaves no room for an answer; "
            "send a shorter prompt",
        )
    return tokens


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _failure(reason: str) -> Response:
    if reason == "abort":
        return Response(503, error_body("the server is shutting down; retry shortly"), headers=(("Retry-After", "1"),))
    return Response(500, error_body("the generation failed in the runtime; see the server log"))


def _run(
    state: ModelState,
    request: Request,
    reply: Reply,
    job: params.Job,
    field: str,
    whole: Callable[[str, str, int, int], bytes],
    chunk: Callable[[str, str | None], bytes | None],
    tail: Callable[[int, int], bytes] | None,
) -> Response | None:
    """Submit the job; answer once (``whole``) or as server-sent events (``chunk``, then ``tail``)."""
    engine = _engine(state)
    tokens = _prompt_tokens(engine, job, field)
    if not job.stream:
        parts: list[str] = []

        def collect(text: str, finish: str | None, prompt: int, completion: int) -> None:
            parts.append(text)
            if finish in ("stop", "length"):
                body = whole("".join(parts), finish, prompt, completion)
                reply(lambda: Response(200, body))
            elif finish is not None:
                reply(lambda: _failure(finish))

        engine.submit(Sequence(tokens, job.sampling, collect))
        return None

    # The events queue from submission on (the engine calls ``forward`` on the event loop) until the
    # front end pulls them as the answer's stream, under the connection's flow control.
    pieces: deque[bytes] = deque()
    wake = asyncio.Event()
    ended = False
    head = chunk("", None) if field == "messages" else None  # the chat role chunk comes first
    if head is not None:
        pieces.append(head)

    def forward(text: str, finish: str | None, prompt: int, completion: int) -> None:
        nonlocal ended
        if finish in ("stop", "length") or finish is None:
            data = chunk(text, finish)
            if data is not None:
                pieces.append(data)
            if finish is not None and tail is not None:
                pieces.append(tail(prompt, completion))
        elif finish != "cancelled":
            pieces.append(_event({"error": {"message": f"generation ended: {finish}", "type": "server_error"}}))
        ended = ended or finish is not None
        wake.set()

    seq = Sequence(tokens, job.sampling, forward)

    async def events() -> AsyncIterator[bytes]:
        """The events as they come; closed early (the client hung up), it cancels the sequence."""
        try:
            while True:
                while pieces:
                    yield pieces.popleft()
                if ended:
                    return
                wake.clear()
                await wake.wait()
        finally:
            if not ended:
                engine.cancel(seq)

    engine.submit(seq)
    return Response(200, b"", SSE, headers=SSE_HEADERS, stream=events())


def _event(document: dict[str, Any]) -> bytes:
    return b"data: " + encode_json(document).encode() + b"\n\n"


def chat_completions(state: ModelState, request: Request, reply: Reply) -> Response | None:
    body = parse_json(request.body)
    params.check_model(params._object(body), state.config.model_name)
    job = params.chat(body)
    ident, created, model = "chatcmpl-" + os.urandom(12).hex(), int(time.time()), state.config.model_name
    first = [True]

    def whole(text: str, finish: str, prompt: int, completion: int) -> bytes:
        return encode_json(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text, "refusal": None},
                        "logprobs": None,
                        "finish_reason": finish,
                    }
                ],
                "usage": _usage(prompt, completion),
            }
        ).encode()

    def chunk(text: str, finish: str | None) -> bytes | None:
        events = b""
        if first[0]:  # the first event names the role, as OpenAI's does
            first[0] = False
            events += _event(
                _chat_chunk(ident, created, model, {"role": "assistant", "content": ""}, None, job.include_usage)
            )
        if text:
            events += _event(_chat_chunk(ident, created, model, {"content": text}, None, job.include_usage))
        if finish is not None:
            events += _event(_chat_chunk(ident, created, model, {}, finish, job.include_usage))
        return events or None

    tail = _tail(job, {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model})
    return _run(state, request, reply, job, "messages", whole, chunk, tail)


def _tail(job: params.Job, head: dict[str, Any]) -> Callable[[int, int], bytes]:
    """The end of an OpenAI stream: the usage event when asked for (``stream_options``), then [DONE]."""

    def tail(prompt: int, completion: int) -> bytes:
        usage = _event(head | {"choices": [], "usage": _usage(prompt, completion)}) if job.include_usage else b""
        return usage + _DONE

    return tail


def _chat_chunk(
    ident: str, created: int, model: str, delta: dict[str, Any], finish: str | None, include_usage: bool
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if include_usage:
        doc["usage"] = None
    return doc


def completions(state: ModelState, request: Request, reply: Reply) -> Response | None:
    body = parse_json(request.body)
    params.check_model(params._object(body), state.config.model_name)
    job = params.completion(body)
    ident, created, model = "cmpl-" + os.urandom(12).hex(), int(time.time()), state.config.model_name

    def doc(text: str, finish: str | None) -> dict[str, Any]:
        return {
            "id": ident,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish}],
        }

    def whole(text: str, finish: str, prompt: int, completion: int) -> bytes:
        return encode_json(doc(text, finish) | {"usage": _usage(prompt, completion)}).encode()

    def chunk(text: str, finish: str | None) -> bytes | None:
        if not text and finish is None:
            return None
        document = doc(text, finish)
        if job.include_usage:
            document["usage"] = None
        return _event(document)

    tail = _tail(job, {"id": ident, "object": "text_completion", "created": created, "model": model})
    return _run(state, request, reply, job, "prompt", whole, chunk, tail)


def _model_object(state: ModelState) -> dict[str, Any]:
    return {"id": state.config.model_name, "object": "model", "created": 0, "owned_by": "modelstack"}


def list_models(state: ModelState, request: Request, reply: Reply) -> Response:
    return Response(200, encode_json({"object": "list", "data": [_model_object(state)]}).encode())


def get_model(state: ModelState, request: Request, reply: Reply) -> Response:
    return Response(200, encode_json(_model_object(state)).encode())  # the router checked the name


def get_metadata(state: ModelState, request: Request, reply: Reply) -> Response:
    """What the predict family's TF Serving metadata route says about the served model, without a tensor
    signature: the prep report under ``metadata.modelstack``. A deployer reads the served artifact here."""
    config = state.config
    document = {
        "model_spec": {"name": config.model_name, "signature_name": "", "version": "1"},
        "metadata": {"modelstack": config.metadata},
    }
    return Response(200, state.memo("generate_metadata", lambda: encode_json(document).encode()))


def _v2(state: ModelState, request: Request, reply: Reply, stream: bool) -> Response | None:
    job = params.generate(parse_json(request.body), stream)
    base = {"model_name": state.config.model_name, "model_version": "1"}

    def whole(text: str, finish: str, prompt: int, completion: int) -> bytes:
        return encode_json(
            base | {"text_output": text, "finish_reason": finish, "usage": _usage(prompt, completion)}
        ).encode()

    def chunk(text: str, finish: str | None) -> bytes | None:
        if not text and finish is None:
            return None
        return _event(base | {"text_output": text} | ({"finish_reason": finish} if finish else {}))

    return _run(state, request, reply, job, "text_input", whole, chunk, None)


def v2_generate(state: ModelState, request: Request, reply: Reply) -> Response | None:
    return _v2(state, request, reply, stream=False)


def v2_generate_stream(state: ModelState, request: Request, reply: Reply) -> Response | None:
    return _v2(state, request, reply, stream=True)


ROUTES: tuple[Route, ...] = (
    Route(
        "openai_chat",
        POST,
        "/v1/chat/completions",
        openai_errors(chat_completions),
        "OpenAI chat completions: `messages`, `max_tokens`/`max_completion_tokens`, `temperature`, "
        "`top_p`, `stop`, `seed`, `n: 1`, `stream` (server-sent events, `stream_options.include_usage`)",
    ),
    Route(
        "openai_completions",
        POST,
        "/v1/completions",
        openai_errors(completions),
        "OpenAI (legacy) completions: `prompt` and the same sampling and streaming fields",
    ),
    Route("openai_models", GET, "/v1/models", list_models, "OpenAI model list: the served model"),
    Route("openai_model", GET, "/v1/models/<name>", get_model, "OpenAI model object"),
    Route(
        "v1_metadata",
        GET,
        "/v1/models/<name>/metadata",
        get_metadata,
        "the prep report under `metadata.modelstack` (variant, artifact sha256, KL, size), as the predict task has it",
    ),
    Route(
        "v2_generate",
        POST,
        "/v2/models/<name>/generate",
        v2_generate,
        'Open Inference Protocol generate extension: `{"text_input", "parameters"?: {"max_tokens", '
        '"temperature", "top_p", "stop", "seed"}}` → `{"model_name", "model_version", "text_output", '
        '"finish_reason", "usage"}`',
    ),
    Route(
        "v2_generate_stream",
        POST,
        "/v2/models/<name>/generate_stream",
        v2_generate_stream,
        "the same as server-sent events, one `text_output` piece per event",
    ),
    Route("v2_live", GET, "/v2/health/live", v2.server_live, '`{"live": true}`', open=True),
    Route("v2_ready", GET, "/v2/health/ready", v2.server_ready, '`{"ready": true}`; 503 while loading', open=True),
)

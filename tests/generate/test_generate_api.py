"""The text-generation family against the real server and llama.cpp, through the official ``openai`` client.

One server (``python -m serving.server`` with ``task: text-generation``) on a tiny random Llama
GGUF: chat and completions, streamed and not; the V2 generate extension; every bad input the issue
lists answered 4xx naming the field; the queue bound (503 + Retry-After); cancellation (a client
that hangs up mid-stream frees its sequence: a request waiting for the only sequence then runs).
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from serving_support import ServerProcess

from modelprep.families.llm.tiny import build

pytestmark = pytest.mark.llama

MODEL = "tiny-llama"
CONTEXT = 4096  # the tiny model's training context: long streams outlast the test's steps


def tiny_llama(path: Path) -> Path:
    """The tiny random Llama (modelprep's, for prep tests) trained for CONTEXT, its answers open-ended:
    end-of-generation is never chosen, so every generation lasts max_tokens."""
    return build(path, context=CONTEXT, open_ended=True)


def generation_config(artifact: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "model_name": MODEL,
        "artifact": str(artifact),
        "host": "127.0.0.1",
        "port": 0,
        "threads": 1,
        "task": "text-generation",
        "max_sequences": 2,
        "max_queued_sequences": 1,
        "context_length": CONTEXT,
        "max_body_bytes": 65536,
        **overrides,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("tiny-llm")
    gguf = tiny_llama(folder / "tiny.gguf")
    proc = ServerProcess(generation_config(gguf), folder)
    proc.ready_record = proc.wait_for("ready", timeout=120)
    yield proc
    assert proc.stop() == 0


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{server.http_url}/v1", api_key="unused", max_retries=0)


def chat(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello world"}], **kwargs)


def post(server: ServerProcess, path: str, body: Any) -> tuple[int, dict[str, str], Any]:
    status, response, payload = server.request("POST", path, body, {"Content-Type": "application/json"})
    return status, dict(response.getheaders()), payload


def metric(server: ServerProcess, name: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    for line in text.splitlines():
        if line.startswith((name + " ", name + "{")):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics:\n{text}")


# -- the OpenAI API --


def test_chat_completion(client: openai.OpenAI) -> None:
    answer = chat(client, max_tokens=12, temperature=0)
    assert answer.object == "chat.completion" and answer.model == MODEL
    choice = answer.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.message.content and choice.finish_reason == "length"
    assert answer.usage is not None and answer.usage.completion_tokens == 12
    assert answer.usage.prompt_tokens > 3  # the ChatML template from the GGUF wraps the message
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 12


def test_chat_stream_matches_the_whole_answer(client: openai.OpenAI) -> None:
    whole = chat(client, max_completion_tokens=16, temperature=0)
    stream = chat(client, max_completion_tokens=16, temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16
    assert all(c.usage is None for c in chunks[:-1])


def test_completions_stream_and_not(client: openai.OpenAI) -> None:
    whole = client.completions.create(model=MODEL, prompt="the model", max_tokens=10, temperature=0)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage is not None and whole.usage.completion_tokens == 10
    pieces = list(client.completions.create(model=MODEL, prompt="the model", max_tokens=10, temperature=0, stream=True))
    assert "".join(p.choices[0].text for p in pieces) == whole.choices[0].text
    assert pieces[-1].choices[0].finish_reason == "length"


def test_sse_ends_with_done(server: ServerProcess) -> None:
    body = json.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 3, "stream": True}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "text/event-stream"
    assert response.getheader("Transfer-Encoding") == "chunked"
    events = [e for e in response.read().decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    conn.close()


def test_seed_repeats_a_sampled_answer(client: openai.OpenAI) -> None:
    answers = {
        chat(client, max_tokens=12, temperature=1.0, top_p=0.9, seed=7).choices[0].message.content for _ in range(2)
    }
    assert len(answers) == 1
    other = chat(client, max_tokens=12, temperature=1.0, seed=8).choices[0].message.content
    assert other not in answers


def test_stop_sequence_ends_the_answer_before_it(client: openai.OpenAI) -> None:
    text = chat(client, max_tokens=24, temperature=0).choices[0].message.content
    assert text is not None and len(text) > 8
    stop = text[5:8]
    cut = text.index(stop)
    stopped = chat(client, max_tokens=24, temperature=0, stop=["zzzz", stop])
    assert stopped.choices[0].message.content == text[:cut]
    assert stopped.choices[0].finish_reason == "stop"
    streamed = chat(client, max_tokens=24, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == text[:cut]


def test_ready_says_how_threads_wait(server: ServerProcess) -> None:
    """1 thread on a machine with more CPUs: `auto` spins (as llama-server does), unless the environment chose."""
    import os

    from serving.generate.cpu_wait import resolve

    chosen = {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ)
    assert server.ready_record["cpu_wait"] == ("environment" if chosen else resolve("auto", threads=1))


def test_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("other")


# -- the Open Inference Protocol generate extension --


def test_v2_generate(server: ServerProcess) -> None:
    status, _, answer = post(
        server,
        f"/v2/models/{MODEL}/generate",
        {"text_input": "hello", "parameters": {"max_tokens": 6, "temperature": 0}},
    )
    assert status == 200 and answer["model_name"] == MODEL and answer["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 6
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    body = json.dumps({"text_input": "hello", "max_tokens": 6, "temperature": 0}).encode()
    conn.request("POST", f"/v2/models/{MODEL}/generate_stream", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    events = [json.loads(e[len("data: ") :]) for e in response.read().decode().split("\n\n") if e]
    assert "".join(e["text_output"] for e in events) == answer["text_output"]
    assert events[-1]["finish_reason"] == "length"
    conn.close()
    status, _, answer = post(server, "/v2/models/other/generate", {"text_input": "hello"})
    assert status == 404 and "other" in answer["error"]


# -- bad input --

GOOD = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"model": MODEL}, "messages"),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": "hi"}, "messages"),
        ({"model": MODEL, "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {
                "model": MODEL,
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            },
            "messages[0].content[0]",
        ),
        ({"model": MODEL, "messages": GOOD, "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL, "messages": GOOD, "max_completion_tokens": -3}, "max_completion_tokens"),
        ({"model": MODEL, "messages": GOOD, "temperature": 2.5}, "temperature"),
        ({"model": MODEL, "messages": GOOD, "temperature": -0.1}, "temperature"),
        ({"model": MODEL, "messages": GOOD, "top_p": 0}, "top_p"),
        ({"model": MODEL, "messages": GOOD, "top_p": 1.5}, "top_p"),
        ({"model": MODEL, "messages": GOOD, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": MODEL, "messages": GOOD, "n": 2}, "n"),
        ({"model": MODEL, "messages": GOOD, "seed": "x"}, "seed"),
        ({"model": MODEL, "messages": GOOD, "stream": "yes"}, "stream"),
        ({"messages": GOOD}, "model"),
    ],
)
def test_bad_chat_input_names_the_field(server: ServerProcess, body: dict[str, Any], field: str) -> None:
    status, _, answer = post(server, "/v1/chat/completions", body)
    assert status == 400, answer
    error = answer["error"]  # OpenAI's shape, which its clients read
    assert error["message"].startswith(field + ":") and error["param"] == field, answer
    assert error["type"] == "invalid_request_error"


def test_bad_input_through_the_client(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="temperature"):
        chat(client, temperature=3)
    with pytest.raises(openai.NotFoundError, match="gpt-4o"):
        client.chat.completions.create(model="gpt-4o", messages=GOOD)  # type: ignore[arg-type]
    assert chat(client, max_tokens=2).choices[0].finish_reason == "length"  # still serving


def test_prompt_longer_than_the_context(server: ServerProcess) -> None:
    status, _, answer = post(
        server, "/v1/completions", {"model": MODEL, "prompt": "hello world " * 4000, "max_tokens": 4}
    )
    assert status == 400
    message = answer["error"]
    assert message["message"].startswith("prompt:") and f"holds {CONTEXT}" in message["message"]
    assert int(message["message"].split("the prompt is ")[1].split()[0]) > CONTEXT


def test_oversized_body_is_413(server: ServerProcess) -> None:
    status, _, answer = post(
        server, "/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x" * 70000}]}
    )
    assert status == 413 and "max_body_bytes" in answer["error"]


def test_malformed_json_and_bad_v2_fields(server: ServerProcess) -> None:
    status, _, answer = post(server, "/v1/chat/completions", b"{not json")
    assert status == 400 and "malformed JSON" in answer["error"]["message"]
    status, _, answer = post(server, f"/v2/models/{MODEL}/generate", {"parameters": {}})
    assert status == 400 and answer["error"].startswith("text_input:")
    status, _, answer = post(server, f"/v2/models/{MODEL}/generate", {"text_input": "hi", "parameters": {"top_p": 2}})
    assert status == 400 and answer["error"].startswith("top_p:")


# -- batching, the queue bound and cancellation --


def test_concurrent_streams_all_complete(client: openai.OpenAI) -> None:
    texts: dict[int, str] = {}

    def one(i: int) -> None:
        texts[i] = "".join(
            c.choices[0].delta.content or "" for c in chat(client, max_tokens=20, temperature=0, stream=True)
        )

    threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]  # 2 sequences + 1 queued
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(texts) == 3 and len(set(texts.values())) == 1  # same greedy answer, batched or not


class RawStream:
    """A streaming request on a raw socket, read until ``n`` data events have arrived."""

    def __init__(self, port: int, max_tokens: int) -> None:
        body = json.dumps(
            {"model": MODEL, "prompt": "hello", "max_tokens": max_tokens, "stream": True, "temperature": 0}
        ).encode()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        self.received = b""

    def read_events(self, n: int) -> None:
        while self.received.count(b"data: ") < n:
            data = self.sock.recv(65536)
            assert data, self.received
            self.received += data

    def close(self) -> None:
        self.sock.close()


def test_full_queue_is_503_then_cancellation_frees_sequences(server: ServerProcess, client: openai.OpenAI) -> None:
    cancelled_before = _finished(server, "cancelled")
    generated_before = metric(server, "modelstack_llm_generated_tokens_total")
    long = [RawStream(server.port, 4000) for _ in range(2)]  # both sequences
    for stream in long:
        stream.read_events(2)
    waiting = RawStream(server.port, 4000)  # the one queue place
    _wait_until(lambda: metric(server, "modelstack_llm_sequences_waiting") == 1)
    status, headers, answer = post(server, "/v1/chat/completions", {"model": MODEL, "messages": GOOD, "max_tokens": 2})
    assert status == 503 and headers["Retry-After"] == "1" and "max_sequences" in answer["error"]["message"]

    for stream in long:  # hang up mid-stream
        stream.close()
    waiting.read_events(2)  # a freed sequence took the waiting request
    answer = chat(client, max_tokens=2)  # and the other one is free for a new request
    assert answer.choices[0].finish_reason == "length"
    waiting.close()
    _wait_until(lambda: _finished(server, "cancelled") == cancelled_before + 3)
    _wait_until(lambda: metric(server, "modelstack_llm_sequences_running") == 0)
    # The three 4,000-token streams stopped early: together they generated less than one would have.
    assert metric(server, "modelstack_llm_generated_tokens_total") - generated_before < 4000


def test_metrics(server: ServerProcess, client: openai.OpenAI) -> None:
    chat(client, max_tokens=4)
    assert metric(server, "modelstack_llm_generated_tokens_total") >= 4
    assert metric(server, "modelstack_llm_prompt_tokens_total") > 0
    assert metric(server, "modelstack_llm_time_to_first_token_seconds_count") >= 1
    assert metric(server, "modelstack_llm_time_per_output_token_seconds_count") >= 1
    assert metric(server, "modelstack_llm_e2e_request_seconds_count") >= 1
    assert metric(server, "modelstack_llm_kv_cache_capacity_tokens") == 2 * CONTEXT
    assert 0 <= metric(server, "modelstack_llm_kv_cache_usage_ratio") <= 1


def _finished(server: ServerProcess, reason: str) -> float:
    try:
        return metric(server, f'modelstack_llm_requests_finished_total{{reason="{reason}"}}')
    except AssertionError:
        return 0.0


def _wait_until(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_sigterm_lets_in_flight_streams_finish(tmp_path: Path) -> None:
    proc = ServerProcess(generation_config(tiny_llama(tmp_path / "tiny.gguf")), tmp_path)
    proc.wait_for("ready", timeout=120)
    stream = RawStream(proc.port, 400)
    stream.read_events(2)
    proc.proc.send_signal(signal.SIGTERM)
    while data := stream.sock.recv(65536):
        stream.received += data
    stream.close()
    assert b"data: [DONE]" in stream.received and stream.received.endswith(b"0\r\n\r\n")
    assert b'"finish_reason":"length"' in stream.received
    assert proc.proc.wait(30) == 0
    assert proc.wait_for("stopped")["drained"] is True

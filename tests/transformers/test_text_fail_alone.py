"""Requests fail alone, text: with truncation "refuse" the tokenizer refuses an over-long text inside
the batch (the runtime tokenizes), so one client's long text would fail every request batched with it.
6 good clients and 2 sending over-long texts, at once, batching on."""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from test_text_serving import _config, _server
from text_support import sentences, tiny_text_onnx

MAX_LENGTH = 16


@pytest.fixture(scope="module")
def batching_refuse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("text-refuse-batching")
    artifact = tiny_text_onnx(folder / "model.onnx", max_length=MAX_LENGTH, truncation="refuse")
    yield from _server(_config(artifact, max_batch_size=16, max_latency_ms=20), folder)


def test_an_over_long_text_fails_only_its_own_request(batching_refuse_server: Any) -> None:
    good_texts = []  # what the server answers alone (a rare word may take many of the tiny vocabulary's tokens)
    for text in sentences(60, seed=3, longest=8):
        status, _, _ = batching_refuse_server.request("POST", "/v1/models/text:predict", {"instances": [text]})
        if status == 200:
            good_texts.append(text)
    assert len(good_texts) >= 20
    long_text = "the " * (MAX_LENGTH * 2)
    outcomes: list[tuple[bool, int, dict[str, Any]]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def client(index: int) -> None:
        bad = index >= 6
        conn = http.client.HTTPConnection("127.0.0.1", batching_refuse_server.port, timeout=30)
        barrier.wait()
        try:
            for n in range(25):
                text = long_text if bad else good_texts[(index * 25 + n) % len(good_texts)]
                conn.request("POST", "/v1/models/text:predict", body=json.dumps({"instances": [text]}))
                response = conn.getresponse()
                answer = json.loads(response.read())
                with lock:
                    outcomes.append((bad, response.status, answer))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    good = [status for bad, status, _ in outcomes if not bad]
    bad = [(status, answer) for was_bad, status, answer in outcomes if was_bad]
    assert good == [200] * 150
    assert len(bad) == 50
    for status, answer in bad:  # the index is the text's within its own request
        assert status == 413 and answer["error"].startswith("text 0 has "), answer

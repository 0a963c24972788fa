"""Text through the server: TF Serving rows and V2 BYTES (JSON and binary), labels, malformed text, and
dynamic batching with mixed lengths (each caller's vector equals its single-request vector)."""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from text_support import sentences, tiny_text_onnx

REPO = Path(__file__).resolve().parents[2]


def _config(artifact: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "model_name": "text",
        "artifact": str(artifact),
        "host": "127.0.0.1",
        "port": 0,
        "threads": 1,
        "runtime": "onnx",
        "inputs": [{"name": "text", "shape": [], "dtype": "string"}],
        "max_body_bytes": 1 << 20,
        "metadata": {},
        "grpc_port": None,
        **overrides,
    }


def _server(config: dict[str, Any], folder: Path) -> Iterator[Any]:
    import sys

    sys.path.insert(0, str(REPO / "tests" / "serving"))
    from serving_support import ready_server

    yield from ready_server(config, folder)


@pytest.fixture(scope="module")
def embed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("text-server")
    artifact = tiny_text_onnx(folder / "model.onnx", max_length=32)
    yield from _server(_config(artifact, max_batch_size=16, max_latency_ms=30), folder)


@pytest.fixture(scope="module")
def refuse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    folder = tmp_path_factory.mktemp("text-refuse")
    artifact = tiny_text_onnx(folder / "model.onnx", labels=("negative", "positive"), max_length=8, truncation="refuse")
    yield from _server(_config(artifact), folder)


def test_v1_rows_and_objects_give_unit_embeddings(embed_server: Any) -> None:
    status, _, body = embed_server.request(
        "POST", "/v1/models/text:predict", {"instances": ["hello world", "a good movie"]}
    )
    assert status == 200, body
    vectors = np.array(body["predictions"])
    assert vectors.shape == (2, 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    status, _, named = embed_server.request(
        "POST", "/v1/models/text:predict", {"instances": [{"text": "hello world"}, {"text": "a good movie"}]}
    )
    assert status == 200 and np.allclose(named["predictions"], vectors, atol=1e-6)


def test_v2_bytes_json_and_binary(embed_server: Any) -> None:
    texts = ["hello world", "naïve café", "the film"]
    status, _, body = embed_server.request(
        "POST",
        "/v2/models/text/infer",
        {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": texts}]},
    )
    assert status == 200, body
    out = body["outputs"][0]
    assert out["shape"] == [3, 8]
    json_vectors = np.array(out["data"]).reshape(3, 8)
    raw = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in texts)
    header = json.dumps(
        {
            "inputs": [
                {"name": "text", "shape": [3, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}
            ]
        }
    ).encode()
    status, _, body = embed_server.request(
        "POST",
        "/v2/models/text/infer",
        header + raw,
        {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert status == 200, body
    np.testing.assert_allclose(np.array(body["outputs"][0]["data"]).reshape(3, 8), json_vectors, atol=1e-6)


@pytest.mark.parametrize(
    "body, needle",
    [
        ({"instances": [""]}, "empty string"),
        ({"instances": ["   "]}, "empty string"),
        ({"instances": [42]}, "not a string"),
        ({"instances": [None]}, "not a string"),
        ({"instances": [["a", "b"]]}, "not a string"),
        ({"instances": []}, "non-empty"),
        ({"inputs": {"text": "not a list"}}, "array of texts"),
    ],
)
def test_v1_malformed_text_is_400(embed_server: Any, body: Any, needle: str) -> None:
    status, _, answer = embed_server.request("POST", "/v1/models/text:predict", body)
    assert status == 400 and needle in answer["error"], answer


def test_v2_malformed_text_is_400(embed_server: Any) -> None:
    bad = b"\xff\xfe"
    raw = struct.pack("<I", len(bad)) + bad
    header = json.dumps(
        {"inputs": [{"name": "text", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": len(raw)}}]}
    ).encode()
    status, _, answer = embed_server.request(
        "POST", "/v2/models/text/infer", header + raw, {"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 400 and "not valid UTF-8" in answer["error"], answer
    for tensor, needle in (
        ({"name": "text", "shape": [1], "datatype": "FP32", "data": ["x"]}, "takes text as BYTES"),
        ({"name": "text", "shape": [2], "datatype": "BYTES", "data": ["x"]}, "needs 2 texts"),
        ({"name": "text", "shape": [1], "datatype": "BYTES", "data": [7]}, "not a string"),
        ({"name": "text", "shape": [1, 3], "datatype": "BYTES", "data": ["x", "y", "z"]}, "one text per sample"),
    ):
        status, _, answer = embed_server.request("POST", "/v2/models/text/infer", {"inputs": [tensor]})
        assert status == 400 and needle in answer["error"], (tensor, answer)


def test_over_long_text_is_refused_with_413_and_labels_are_named(refuse_server: Any) -> None:
    status, _, answer = refuse_server.request("POST", "/v1/models/text:predict", {"instances": ["the " * 20]})
    assert status == 413 and "max_length 8" in answer["error"], answer
    status, _, answer = refuse_server.request("POST", "/v1/models/text:predict", {"instances": ["good", "bad day"]})
    assert status == 200, answer
    for row in answer["predictions"]:
        assert row["label"] in ("negative", "positive")
        assert set(row["probabilities"]) == {"negative", "positive"}
        assert abs(sum(row["probabilities"].values()) - 1) < 1e-5


def test_mixed_length_batch_gives_each_caller_its_single_request_vector(embed_server: Any) -> None:
    texts = sentences(48, seed=9, longest=30)
    single = {}
    for t in texts:
        status, _, body = embed_server.request("POST", "/v1/models/text:predict", {"instances": [t]})
        assert status == 200
        single[t] = np.array(body["predictions"][0])
    results: dict[str, np.ndarray] = {}
    barrier = threading.Barrier(len(texts))

    def call(t: str) -> None:
        barrier.wait()
        status, _, body = embed_server.request("POST", "/v1/models/text:predict", {"instances": [t]})
        assert status == 200
        results[t] = np.array(body["predictions"][0])

    threads = [threading.Thread(target=call, args=(t,)) for t in texts]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(results) == len(texts)
    for t in texts:
        np.testing.assert_allclose(results[t], single[t], atol=1e-5)
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", embed_server.port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    counts = {
        line.split("le=")[1].split("}")[0].strip('"'): float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("modelstack_batch_size_bucket")
    }
    assert counts["1.0" if "1.0" in counts else "1"] < counts["+Inf"], "some requests ran batched together"

"""V2 HTTP with the binary tensor data extension: tritonclient.http in its defaults and in JSON mode, strict framing.

The server is ``python -m serving.server`` on the tiny ONNX model of tests/serving/v2_fixtures.py.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from v2_fixtures import API_KEY, MODEL, SAMPLES, V2Server, expected_outputs, server_config, started, tiny_onnx_model

INFER = f"/v2/models/{MODEL}/infer"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V2Server]:
    folder = tmp_path_factory.mktemp("v2-binary")
    yield from started(server_config(tiny_onnx_model(folder)), folder)


def _post(server: V2Server, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.request("POST", INFER, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def _binary_request(header: dict[str, object], tail: bytes, length: int | None = None) -> tuple[bytes, dict[str, str]]:
    document = json.dumps(header).encode()
    return document + tail, {"Inference-Header-Content-Length": str(len(document) if length is None else length)}


def _tensor(**fields: object) -> dict[str, object]:
    return {"name": "features", "shape": [1, 4], "datatype": "FP32", **fields}


# --- tritonclient.http --------------------------------------------------------------------------


def test_tritonclient_http_defaults_send_and_receive_binary(server: V2Server) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(MODEL)
    meta = client.get_model_metadata(MODEL)
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    inputs = [httpclient.InferInput("features", [5, 4], "FP32")]
    inputs[0].set_data_from_numpy(SAMPLES)  # binary_data=True by default
    result = client.infer(MODEL, inputs, request_id="r1")  # no outputs: binary_data_output
    output = result.as_numpy("output_0")
    assert output.shape == (5, 3) and output.dtype == np.float32
    np.testing.assert_allclose(output, expected_outputs(SAMPLES), rtol=1e-5)
    response = result.get_response()
    assert response["id"] == "r1" and response["outputs"][0]["parameters"] == {"binary_data_size": 60}
    # An output asked for by name is binary by default too; the version route works as well.
    outputs = [httpclient.InferRequestedOutput("output_0")]
    result = client.infer(MODEL, inputs, outputs=outputs, model_version="1")
    np.testing.assert_allclose(result.as_numpy("output_0"), expected_outputs(SAMPLES), rtol=1e-5)
    assert "data" not in result.get_response()["outputs"][0]


def test_tritonclient_http_json_mode_and_mixed(server: V2Server) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    inputs = [httpclient.InferInput("features", [2, 4], "FP32")]
    inputs[0].set_data_from_numpy(SAMPLES[:2], binary_data=False)
    json_out = [httpclient.InferRequestedOutput("output_0", binary_data=False)]
    result = client.infer(MODEL, inputs, outputs=json_out)
    assert "data" in result.get_response()["outputs"][0]
    np.testing.assert_allclose(result.as_numpy("output_0"), expected_outputs(SAMPLES[:2]), rtol=1e-5)
    # JSON in, binary out (tritonclient asks for binary outputs when none are named) ...
    result = client.infer(MODEL, inputs)
    assert result.get_response()["outputs"][0]["parameters"]["binary_data_size"] == 24
    np.testing.assert_allclose(result.as_numpy("output_0"), expected_outputs(SAMPLES[:2]), rtol=1e-5)
    # ... and binary in, JSON out; integer tensors are converted to the float input.
    ints = np.array([[1, 2, 3, 4]], dtype=np.int64)
    inputs = [httpclient.InferInput("features", [1, 4], "INT64")]
    inputs[0].set_data_from_numpy(ints)
    result = client.infer(MODEL, inputs, outputs=json_out)
    np.testing.assert_allclose(result.as_numpy("output_0"), expected_outputs(ints), rtol=1e-5)


def test_tritonclient_http_bytes_input_to_a_float_model_names_the_expected_datatype(server: V2Server) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    words = np.array([[b"a", b"bb", b"", b"d"]], dtype=object)
    for binary in (True, False):
        inputs = [httpclient.InferInput("features", [1, 4], "BYTES")]
        inputs[0].set_data_from_numpy(words, binary_data=binary)
        with pytest.raises(InferenceServerException) as info:
            client.infer(MODEL, inputs)
        assert 'inputs[0].datatype: input "features" takes FP32' in str(info.value), str(info.value)
        assert 'got "BYTES"' in str(info.value)


# --- the wire format ------------------------------------------------------------------------------


def test_binary_answer_framing(server: V2Server) -> None:
    body, headers = _binary_request(
        {
            "inputs": [_tensor(shape=[2, 4], parameters={"binary_data_size": 32})],
            "parameters": {"binary_data_output": True},
        },
        SAMPLES[:2].tobytes(),
    )
    status, answer_headers, answer = _post(server, body, headers)
    assert status == 200, answer
    assert answer_headers["content-type"] == "application/octet-stream"
    length = int(answer_headers["inference-header-content-length"])
    document = json.loads(answer[:length])
    assert document["outputs"][0] == {
        "name": "output_0",
        "shape": [2, 3],
        "datatype": "FP32",
        "parameters": {"binary_data_size": 24},
    }
    assert len(answer) == length + 24
    np.testing.assert_allclose(
        np.frombuffer(answer[length:], "<f4").reshape(2, 3), expected_outputs(SAMPLES[:2]), rtol=1e-5
    )
    # Without binary outputs asked for, the answer is plain JSON with no framing header.
    body, headers = _binary_request({"inputs": [_tensor(parameters={"binary_data_size": 16})]}, SAMPLES[:1].tobytes())
    status, answer_headers, answer = _post(server, body, headers)
    assert status == 200 and "inference-header-content-length" not in answer_headers
    assert answer_headers["content-type"] == "application/json" and json.loads(answer)["outputs"][0]["data"]


@pytest.mark.parametrize(
    ("header", "tail", "length", "message"),
    [
        (
            {"inputs": [_tensor(parameters={"binary_data_size": 16})]},
            b"\x00" * 16,
            10_000,
            "Inference-Header-Content-Length: 10000 is larger than the body",
        ),
        (
            {"inputs": [_tensor(parameters={"binary_data_size": 16})]},
            b"\x00" * 16,
            "x12",
            "Inference-Header-Content-Length: must be the JSON header's size in bytes",
        ),
        ({"inputs": [_tensor(parameters={"binary_data_size": 16})]}, b"\x00" * 16, 5, "malformed JSON"),
        (
            {"inputs": [_tensor(parameters={"binary_data_size": 20})]},
            b"\x00" * 16,
            None,
            "inputs[0].parameters.binary_data_size: 20 bytes, but only 16 binary byte(s) follow",
        ),
        (
            {"inputs": [_tensor(parameters={"binary_data_size": 12})]},
            b"\x00" * 16,
            None,
            "inputs[0]: 12 bytes of binary data, but shape [1, 4] of FP32 needs 16",
        ),
        (
            {"inputs": [_tensor(parameters={"binary_data_size": 16})]},
            b"\x00" * 20,
            None,
            "4 byte(s) after the JSON header belong to no input",
        ),
        (
            {"inputs": [_tensor(data=[1, 2, 3, 4])]},
            b"\x00" * 4,
            None,
            "4 byte(s) after the JSON header belong to no input",
        ),
        (
            {"inputs": [_tensor(data=[1, 2, 3, 4], parameters={"binary_data_size": 16})]},
            b"\x00" * 16,
            None,
            'inputs[0]: give the tensor as "data" or as binary_data_size bytes, not both',
        ),
        (
            {"inputs": [_tensor(parameters={"binary_data_size": -16})]},
            b"\x00" * 16,
            None,
            "binary_data_size: must be the tensor's size in bytes",
        ),
        (
            {"inputs": [_tensor(datatype="FP64", parameters={"binary_data_size": 16})]},
            b"\x00" * 16,
            None,
            "shape [1, 4] of FP64 needs 32",
        ),
        (
            {"inputs": [_tensor(parameters={"binary_data_size": 16})]},
            np.array([1, np.inf, 3, 4], dtype="<f4").tobytes(),
            None,
            "non-finite values",
        ),
        (
            {"inputs": [_tensor(datatype="BYTES", parameters={"binary_data_size": 8})]},
            struct.pack("<I", 4) + b"abcd",
            None,
            'input "features" takes FP32',
        ),
        (
            {"inputs": [_tensor(parameters={"binary_data_size": 16})], "parameters": {"binary_data_output": "yes"}},
            b"\x00" * 16,
            None,
            "parameters.binary_data_output: must be true or false",
        ),
        (
            {
                "inputs": [_tensor(parameters={"binary_data_size": 16})],
                "outputs": [{"name": "output_0", "parameters": {"binary_data": 1}}],
            },
            b"\x00" * 16,
            None,
            "outputs[0].parameters.binary_data: must be true or false",
        ),
    ],
)
def test_binary_requests_that_do_not_add_up_get_400_naming_the_tensor(
    server: V2Server, header: dict[str, object], tail: bytes, length: object, message: str
) -> None:
    body, headers = _binary_request(header, tail, length)  # type: ignore[arg-type]
    status, _, answer = _post(server, body, headers)
    assert status == 400, answer
    assert message in json.loads(answer)["error"], answer


def test_the_header_length_sent_twice_is_400(server: V2Server) -> None:
    document = json.dumps({"inputs": [_tensor(parameters={"binary_data_size": 16})]}).encode()
    head = (
        f"POST {INFER} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(document) + 16}\r\n"
        f"Inference-Header-Content-Length: {len(document)}\r\nInference-Header-Content-Length: 1\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head.encode() + document + b"\x00" * 16)
        response = http.client.HTTPResponse(sock)
        response.begin()
        assert response.status == 400
        assert "Inference-Header-Content-Length: sent 2 times" in json.loads(response.read())["error"]


def test_binary_data_size_without_the_header_is_400(server: V2Server) -> None:
    body = json.dumps({"inputs": [_tensor(parameters={"binary_data_size": 16})]}).encode()
    status, _, answer = _post(server, body, {})
    assert status == 400
    assert "needs the Inference-Header-Content-Length header" in json.loads(answer)["error"]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V2Server]:
    folder = tmp_path_factory.mktemp("v2-binary-keyed")
    config = server_config(tiny_onnx_model(folder), api_key_env="V2_TEST_API_KEY", max_batch_size=4)
    yield from started(config, folder, env={"V2_TEST_API_KEY": API_KEY})


def test_tritonclient_http_with_the_api_key(keyed: V2Server) -> None:
    client = httpclient.InferenceServerClient(keyed.http_url)
    inputs = [httpclient.InferInput("features", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(SAMPLES[:1])
    with pytest.raises(InferenceServerException, match="missing or wrong API key"):
        client.infer(MODEL, inputs)
    result = client.infer(MODEL, inputs, headers={"Authorization": f"Bearer {API_KEY}"})
    np.testing.assert_allclose(result.as_numpy("output_0"), expected_outputs(SAMPLES[:1]), rtol=1e-5)


def test_body_limit_counts_the_binary_part(tmp_path: Path) -> None:
    server = V2Server(server_config(tiny_onnx_model(tmp_path), max_body_bytes=2048), tmp_path)
    try:
        server.wait_for("ready")
        big = np.zeros((200, 4), dtype=np.float32)  # 3,200 bytes of tensor data
        body, headers = _binary_request(
            {"inputs": [_tensor(shape=[200, 4], parameters={"binary_data_size": big.nbytes})]}, big.tobytes()
        )
        status, _, _ = _post(server, body, headers)
        assert status == 413
    finally:
        server.stop()

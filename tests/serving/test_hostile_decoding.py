"""Issue 19, findings 5, 6, 7 and 9: decoding under hostile bodies, over real sockets.

A real server (``python -m serving.server`` on the tiny ONNX model, HTTP and gRPC on ephemeral
ports) gets bodies built to be expensive or to overflow a message: refusing one must cost about
what serving a valid one does (server CPU read from ``/proc``), FP16 infinities are refused, huge
integers are a 400 with a short message, and client strings in gRPC status messages are cut.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from v2_fixtures import MODEL, V2Server, server_config, started, tiny_onnx_model

ROWS = 60_000  # ~1.5 MB of JSON numbers per body
CUT = 1024  # serving.grpc_service.MAX_STATUS_MESSAGE


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[V2Server]:
    model = tiny_onnx_model(tmp_path_factory.mktemp("hostile-model"))
    config = server_config(model, max_body_bytes=8 * 2**20)
    yield from started(config, tmp_path_factory.mktemp("hostile-server"))


def _post(server: V2Server, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
    try:
        connection.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cost(server: V2Server, path: str, body: bytes, status: int, times: int = 3) -> float:
    """Server CPU seconds for ``times`` requests of ``body``, each answered ``status``."""
    before = _cpu_seconds(server.proc.pid)
    for _ in range(times):
        got, payload = _post(server, path, body)
        assert got == status, payload[:300]
    return _cpu_seconds(server.proc.pid) - before


def _values_text() -> str:
    values = np.random.default_rng(5).normal(size=(ROWS, 4)).round(6).tolist()
    return json.dumps(values)


# --- finding 5: a refused body costs about what a valid one does ---------------------------------


def test_a_boolean_in_a_v2_body_costs_about_a_valid_body(server: V2Server) -> None:
    data = _values_text()
    valid = f'{{"inputs": [{{"name": "features", "shape": [{ROWS}, 4], "datatype": "FP32", "data": {data}}}]}}'
    refused = valid.replace("]]}]}", ", true]]}]}", 1).replace(f"[{ROWS}, 4]", f"[{ROWS}, 5]", 1)
    refused_last = valid[: valid.rindex(",")] + ", true]]}]}"  # the last value a boolean, shape intact
    binary_output = valid[:-1] + ', "parameters": {"binary_data_output": true}}'
    _post(server, "/v2/models/tiny/infer", valid.encode())  # warm
    valid_cost = _cost(server, "/v2/models/tiny/infer", valid.encode(), 200)
    for body in (refused, refused_last):
        cost = _cost(server, "/v2/models/tiny/infer", body.encode(), 400)
        assert cost <= 3 * valid_cost + 0.05, (cost, valid_cost)
    assert _cost(server, "/v2/models/tiny/infer", binary_output.encode(), 200) <= 2 * valid_cost + 0.05
    status, payload = _post(server, "/v2/models/tiny/infer", refused_last.encode())
    assert status == 400 and b"expected a number, got true" in payload and f"[{ROWS - 1}][3]".encode() in payload


def test_a_boolean_in_a_v1_body_costs_about_a_valid_body(server: V2Server) -> None:
    data = _values_text()
    valid = f'{{"instances": {data}}}'
    refused_last = valid[: valid.rindex(",")] + ", false]]}"
    refused_ragged = valid[:-2] + ", [1, 2, true]]}"
    _post(server, "/v1/models/tiny:predict", valid.encode())  # warm
    valid_cost = _cost(server, "/v1/models/tiny:predict", valid.encode(), 200)
    for body in (refused_last, refused_ragged):
        cost = _cost(server, "/v1/models/tiny:predict", body.encode(), 400)
        assert cost <= 3 * valid_cost + 0.05, (cost, valid_cost)
    status, payload = _post(server, "/v1/models/tiny:predict", refused_last.encode())
    assert status == 400 and f"instances[{ROWS - 1}][3]: expected a number".encode() in payload


# --- finding 6: FP16 infinities are not finite ----------------------------------------------------


@pytest.mark.parametrize("value", [np.inf, -np.inf, np.nan])
def test_fp16_non_finite_values_are_refused_over_binary_http(server: V2Server, value: float) -> None:
    raw = np.array([[0.5, value, 1.0, 2.0]], dtype="<f2").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "features", "shape": [1, 4], "datatype": "FP16", "parameters": {"binary_data_size": len(raw)}}
            ]
        }
    ).encode()
    status, payload = _post(
        server,
        "/v2/models/tiny/infer",
        header + raw,
        {"Inference-Header-Content-Length": str(len(header)), "Content-Type": "application/octet-stream"},
    )
    assert status == 400 and b"non-finite" in payload


@pytest.mark.parametrize("value", [np.inf, -np.inf])
def test_fp16_infinities_are_refused_over_grpc(server: V2Server, value: float) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("features", [1, 4], "FP16")
    tensor.set_data_from_numpy(np.array([[value, 0.0, 1.0, 2.0]], dtype=np.float16))
    with pytest.raises(InferenceServerException) as caught:
        client.infer(MODEL, [tensor])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and "non-finite" in caught.value.message()


# --- finding 7: huge integers are client errors with short messages -------------------------------


def test_a_5000_digit_header_length_is_a_400(server: V2Server) -> None:
    body = b'{"inputs": []}'
    status, payload = _post(server, "/v2/models/tiny/infer", body, {"Inference-Header-Content-Length": "9" * 5000})
    assert status == 400 and len(payload) < 600 and b"Inference-Header-Content-Length" in payload


@pytest.mark.parametrize("dims", [[10**4299, 64], [10**4299, 4]])
def test_a_huge_shape_is_a_400_on_json_and_binary(server: V2Server, dims: list[int]) -> None:
    shape = json.dumps(dims)
    as_json = f'{{"inputs": [{{"name": "features", "shape": {shape}, "datatype": "FP32", "data": [1, 2, 3, 4]}}]}}'
    status, payload = _post(server, "/v2/models/tiny/infer", as_json.encode())
    assert status == 400 and len(payload) < 600 and b"shape" in payload, payload[:300]
    raw = np.zeros(4, "<f4").tobytes()
    header = (
        f'{{"inputs": [{{"name": "features", "shape": {shape}, "datatype": "FP32", '
        f'"parameters": {{"binary_data_size": {len(raw)}}}}}]}}'
    ).encode()
    status, payload = _post(
        server, "/v2/models/tiny/infer", header + raw, {"Inference-Header-Content-Length": str(len(header))}
    )
    assert status == 400 and len(payload) < 600 and b"shape" in payload, payload[:300]


# --- finding 9: client strings in gRPC status messages are cut ------------------------------------


def _grpc_error(server: V2Server, call: Any) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call(grpcclient.InferenceServerClient(server.grpc_url))
    return caught.value


def _features() -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("features", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 4), np.float32))
    return tensor


def test_long_client_strings_are_cut_in_grpc_status_messages(server: V2Server) -> None:
    long = "m" * 16_384
    cases = [
        (lambda c: c.infer(long, [_features()]), "StatusCode.NOT_FOUND"),
        (lambda c: c.infer("\x00" * 400_000, [_features()]), "StatusCode.NOT_FOUND"),
        (lambda c: c.infer(MODEL, [_features()], model_version=long), "StatusCode.NOT_FOUND"),
        (
            lambda c: c.infer(MODEL, [_features()], outputs=[grpcclient.InferRequestedOutput(long)]),
            "StatusCode.INVALID_ARGUMENT",
        ),
        (lambda c: c.get_model_metadata(long), "StatusCode.NOT_FOUND"),
    ]
    for call, code in cases:
        error = _grpc_error(server, call)
        assert error.status() == code, (error.status(), error.message()[:200])
        assert len(error.message()) <= CUT + 100  # the client adds its own prefix


def test_a_long_tensor_problem_message_is_cut_with_the_cut_shown(server: V2Server) -> None:
    name = "n" * 5000
    error = _grpc_error(
        server,
        lambda c: c.infer(
            MODEL, [grpcclient.InferInput(name, [1, 4], "FP32").set_data_from_numpy(np.zeros((1, 4), np.float32))]
        ),
    )
    assert error.status() == "StatusCode.INVALID_ARGUMENT" and len(error.message()) <= CUT + 100

"""The server's protocols: conformance of both APIs, V2 decoding, API key, metrics, ONNX, fuzzing.

Servers run as subprocesses (``python -m serving.server``, or on FakeRuntime without TensorFlow).
``tests/conformance.py`` is the same check the e2e test runs against the deployed container.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conformance import check_conformance
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving_support import MODEL, SAMPLES, ServerProcess, make_config, ready_server

from serving.config import InputSpec, ServingConfig
from serving.errors import ClientError
from serving.v1 import decode_predict_request
from serving.v2 import decode_infer

SPEC = InputSpec("features", (4,), "float32")
API_KEY = "s3cret-key"


@pytest.fixture(scope="module")
def v2_server(tflite_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from ready_server(make_config(tflite_models["float32"]), tmp_path_factory.mktemp("v2-server"))


@pytest.fixture(scope="module")
def keyed_server(
    tflite_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, monkeypatch_module: pytest.MonkeyPatch
) -> Iterator[ServerProcess]:
    monkeypatch_module.setenv("TEST_MODELSTACK_API_KEY", API_KEY)
    config = make_config(tflite_models["int8"], api_key_env="TEST_MODELSTACK_API_KEY", max_batch_size=8)
    yield from ready_server(config, tmp_path_factory.mktemp("keyed-server"))


def _direct_predict(artifact: Path, batch: np.ndarray) -> np.ndarray:
    from serving.runtime import LiteRTModel

    return LiteRTModel(artifact, num_threads=1).predict(batch)


def _base(server: ServerProcess) -> str:
    return f"http://127.0.0.1:{server.port}"


# --- conformance ------------------------------------------------------------------------------------


@pytest.mark.tf
def test_conformance_float_model(v2_server: ServerProcess) -> None:
    meta = check_conformance(_base(v2_server), MODEL, SAMPLES[0].tolist())
    assert meta == {
        "name": MODEL,
        "versions": ["1"],
        "platform": "tensorflow_lite",
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "output_0", "datatype": "FP32", "shape": [-1, 3]}],
    }


@pytest.mark.tf
def test_conformance_int8_model_with_api_key_and_batching(keyed_server: ServerProcess) -> None:
    check_conformance(_base(keyed_server), MODEL, SAMPLES[0].tolist(), api_key=API_KEY)


@pytest.mark.tf
def test_v2_infer_matches_direct_runtime(v2_server: ServerProcess, tflite_models: dict[str, Path]) -> None:
    expected = _direct_predict(tflite_models["float32"], SAMPLES)
    body = {"inputs": [{"name": "features", "shape": [5, 4], "datatype": "FP32", "data": SAMPLES.ravel().tolist()}]}
    status, _, doc = v2_server.request("POST", f"/v2/models/{MODEL}/infer", body)
    assert status == 200
    assert doc["outputs"][0]["shape"] == [5, 3] and doc["outputs"][0]["datatype"] == "FP32"
    np.testing.assert_allclose(np.array(doc["outputs"][0]["data"]).reshape(5, 3), expected, rtol=1e-6)
    # Integer datatypes are accepted for a float input and converted.
    ints = {"inputs": [{"name": "features", "shape": [1, 4], "datatype": "INT32", "data": [1, 2, 3, 4]}]}
    status, _, doc = v2_server.request("POST", f"/v2/models/{MODEL}/infer", ints)
    expected = _direct_predict(tflite_models["float32"], np.array([[1, 2, 3, 4]], dtype=np.float32))
    assert status == 200
    np.testing.assert_allclose(doc["outputs"][0]["data"], expected[0], rtol=1e-6)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[]", 'the body must be a JSON object with "inputs"'),
        (b"{}", 'missing "inputs"'),
        (b'{"inputs": [], "x": 1}', 'unexpected field(s) "x"'),
        (b'{"inputs": []}', 'missing input "features"'),
        (b'{"inputs": [1]}', "inputs[0]: must be an object"),
        (b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32"}]}', "inputs[0].data: required"),
        (
            b'{"inputs": [{"name": "f", "shape": [1, 4], "datatype": "FP32", "data": [1,2,3,4]}]}',
            'inputs[0].name: unexpected input "f"; this model takes "features"',
        ),
        (
            b'{"inputs": [{"name": "features", "shape": [4], "datatype": "FP32", "data": [1,2,3,4]}]}',
            "takes shape [-1, 4]",
        ),
        (b'{"inputs": [{"name": "features", "shape": [0, 4], "datatype": "FP32", "data": []}]}', "takes shape [-1, 4]"),
        (b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "BYTES", "data": [1,2,3,4]}]}', 'got "BYTES"'),
        (
            b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1,2,3]}]}',
            "needs 4 values, got 3",
        ),
        (
            b'{"inputs": [{"name": "features", "shape": [2, 4], "datatype": "FP32", "data": [[1,2],[3,4],[5,6],[7,8]]}]}',
            "nested data has shape [4, 2]",
        ),
        (
            b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1,2,"3",4]}]}',
            'data[2]: expected a number, got "3"',
        ),
        (
            b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1,2,true,4]}]}',
            "data[2]: expected a number, got true",
        ),
        (
            b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1,2,NaN,4]}]}',
            "NaN is not allowed",
        ),
        (
            b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1,2,1e999,4]}]}',
            "non-finite",
        ),
        (
            b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "INT8", "data": [1,2,300,4]}]}',
            "INT8 takes values in -128..127",
        ),
        (
            b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1,2,3,4], "x": 0}]}',
            'inputs[0]: unexpected field(s) "x"',
        ),
        (b'{"id": 5, "inputs": []}', "id: must be a string"),
        (b'{"outputs": [{"name": "probs"}], "inputs": []}', 'the model has one output, "output_0"'),
        (
            b'{"parameters": {"binary_data_output": "yes"}, "inputs": []}',
            "parameters.binary_data_output: must be true or false",
        ),
        (b'{"inputs": ' + b"[" * 3000 + b"]" * 3000 + b"}", "nested too deeply"),
    ],
)
def test_v2_decode_rejects_bad_requests_with_a_message(body: bytes, message: str) -> None:
    with pytest.raises(ClientError) as info:
        decode_infer(body, SPEC)
    assert info.value.status == 400 and message in info.value.message, info.value.message


def test_v2_decode_accepts_flat_and_nested_data() -> None:
    flat = b'{"inputs": [{"name": "features", "shape": [2, 4], "datatype": "FP32", "data": [1,2,3,4,5,6,7,8]}]}'
    nested = b'{"id": "r", "inputs": [{"name": "features", "shape": [2, 4], "datatype": "FP64", "data": [[1,2,3,4],[5,6,7,8]]}]}'
    a, id_a, _ = decode_infer(flat, SPEC)
    b, id_b, _ = decode_infer(nested, SPEC)
    assert a.dtype == b.dtype == np.float32 and a.shape == (2, 4)
    np.testing.assert_array_equal(a, b)
    assert (id_a, id_b) == (None, "r")


def test_not_ready_v2_routes_answer_503_but_live(ask_unloaded_server) -> None:  # noqa: ANN001
    seen = ask_unloaded_server(
        [
            ("GET", "/v2/health/live", None),
            ("GET", "/v2/health/ready", None),
            ("GET", f"/v2/models/{MODEL}/ready", None),
            ("GET", f"/v2/models/{MODEL}", None),
            ("POST", f"/v2/models/{MODEL}/infer", b'{"inputs": []}'),
        ]
    )
    assert seen["/v2/health/live"] == (200, {"live": True})
    assert seen["/v2/health/ready"] == (503, {"ready": False})
    assert seen[f"/v2/models/{MODEL}/ready"] == (503, {"name": MODEL, "ready": False})
    assert seen[f"/v2/models/{MODEL}"][0] == 503
    assert seen[f"/v2/models/{MODEL}/infer"][0] == 503


# --- API key -------------------------------------------------------------------------------------------


@pytest.mark.tf
def test_api_key_is_required_except_on_health_routes(keyed_server: ServerProcess) -> None:
    predict = f"/v1/models/{MODEL}:predict"
    body = {"instances": SAMPLES[:1].tolist()}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}, {"Authorization": API_KEY}):
        status, response, doc = keyed_server.request("POST", predict, body, headers)
        assert status == 401 and "API key" in doc["error"], (headers, status, doc)
        assert response.getheader("WWW-Authenticate", "").startswith("Bearer")
    for path in ("/metrics", f"/v2/models/{MODEL}", "/no/such/route"):
        assert keyed_server.request("GET", path)[0] == 401, path
    for headers in ({"Authorization": f"Bearer {API_KEY}"}, {"X-API-Key": API_KEY}):
        assert keyed_server.request("POST", predict, body, headers)[0] == 200
    for path in ("/healthz", "/readyz", "/v2/health/live", "/v2/health/ready"):
        assert keyed_server.request("GET", path)[0] == 200, path


def test_api_key_env_unset_refuses_to_start(tmp_path: Path) -> None:
    config = make_config(tmp_path / "model.tflite", api_key_env="TEST_MODELSTACK_UNSET_KEY")
    server = ServerProcess(config, tmp_path)
    assert server.proc.wait(timeout=20) == 2
    assert "TEST_MODELSTACK_UNSET_KEY is unset or empty" in server.wait_for("config_error")["error"]


# --- metrics -----------------------------------------------------------------------------------------


def _series(text: str) -> dict[str, float]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


@pytest.mark.tf
def test_metrics_count_requests_by_route_and_status(v2_server: ServerProcess) -> None:
    def scrape() -> dict[str, float]:
        conn = http.client.HTTPConnection("127.0.0.1", v2_server.port, timeout=5)
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/plain; version=0.0.4; charset=utf-8"
        text = response.read().decode()
        conn.close()
        return _series(text)

    before = scrape()
    ok = {"instances": SAMPLES[:3].tolist()}
    for _ in range(3):
        assert v2_server.request("POST", f"/v1/models/{MODEL}:predict", ok)[0] == 200
    assert v2_server.request("POST", f"/v1/models/{MODEL}:predict", b"{")[0] == 400
    assert v2_server.request("GET", "/nope")[0] == 404
    after = scrape()

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta('modelstack_requests_total{route="v1_predict",status="200"}') == 3
    assert delta('modelstack_requests_total{route="v1_predict",status="400"}') == 1
    assert delta('modelstack_requests_total{route="other",status="404"}') == 1
    assert delta('modelstack_request_duration_seconds_count{route="v1_predict"}') == 4
    assert delta('modelstack_request_duration_seconds_bucket{route="v1_predict",le="+Inf"}') == 4
    assert delta("modelstack_batch_size_count") == 3 and delta("modelstack_batch_size_sum") == 9
    assert delta('modelstack_batch_size_bucket{le="2.0"}') == 0 and delta('modelstack_batch_size_bucket{le="4.0"}') == 3
    assert delta("modelstack_inference_duration_seconds_count") == 3
    assert after["modelstack_model_ready"] == 1


# --- ONNX Runtime ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    """A 4 -> 3 softmax(x W + b) ONNX graph with a dynamic batch dimension."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    weights = rng.normal(size=(4, 3)).astype(np.float32)
    bias = rng.normal(size=(3,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    onnx.save(model, str(path))
    return path, weights, bias


def test_onnx_artifact_is_served_by_onnx_runtime(
    onnx_model: tuple[Path, np.ndarray, np.ndarray], tmp_path: Path
) -> None:
    path, weights, bias = onnx_model
    logits = SAMPLES @ weights + bias
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    expected /= expected.sum(axis=1, keepdims=True)

    server = ServerProcess(make_config(path, threads=2, max_batch_size=4, max_latency_ms=1), tmp_path)
    try:
        ready = server.wait_for("ready")
        assert ready["runtime"] == "onnx" and ready["threads"] == 2
        meta = check_conformance(_base(server), MODEL, SAMPLES[0].tolist())
        assert meta["platform"] == "onnxruntime_onnx"
        status, _, doc = server.request("POST", f"/v1/models/{MODEL}:predict", {"instances": SAMPLES.tolist()})
        assert status == 200
        np.testing.assert_allclose(doc["predictions"], expected, rtol=1e-5, atol=1e-6)
    finally:
        assert server.stop() == 0


def test_runtime_choice_follows_suffix_ormake_config() -> None:
    base: dict[str, Any] = {"model_name": "m", "inputs": [{"name": "x", "shape": [1], "dtype": "float32"}]}
    assert ServingConfig.from_dict({**base, "artifact": "/a/model.onnx"}).resolved_runtime == "onnx"
    assert ServingConfig.from_dict({**base, "artifact": "/a/model.tflite"}).resolved_runtime == "litert"
    assert ServingConfig.from_dict({**base, "artifact": "/a/m.bin", "runtime": "onnx"}).resolved_runtime == "onnx"
    with pytest.raises(ValueError) as info:
        ServingConfig.from_dict(
            {
                **base,
                "artifact": "a",
                "runtime": "tf",
                "max_batch_size": -1,
                "max_latency_ms": "1",
                "api_key_env": "1BAD",
            }
        )
    for message in (
        "runtime: must be one of auto, litert, onnx",
        "max_batch_size: must be an integer",
        "max_latency_ms: must be a number",
        "api_key_env: must be null or an environment",
    ):
        assert message in str(info.value)


# --- fuzzing --------------------------------------------------------------------------------------------

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=40,
)
_tensor = st.fixed_dictionaries(
    {},
    optional={
        "name": st.one_of(st.just("features"), st.text(max_size=8), _json_leaf),
        "shape": st.one_of(st.lists(st.integers(-2, 6), max_size=3), _json),
        "datatype": st.sampled_from(["FP32", "FP64", "INT8", "UINT8", "INT64", "BOOL", "BYTES", "fp32", ""]),
        "data": st.one_of(st.lists(st.floats(allow_nan=False, width=32), max_size=12), _json),
        "parameters": _json,
        "extra": _json,
    },
)
_v2_body = st.fixed_dictionaries(
    {},
    optional={
        "inputs": st.one_of(st.lists(_tensor, max_size=2), _json),
        "id": _json,
        "outputs": _json,
        "parameters": _json,
        "junk": _json,
    },
).map(lambda d: json.dumps(d).encode())
_v1_body = st.fixed_dictionaries(
    {},
    optional={"instances": _json, "inputs": _json, "signature_name": _json, "junk": _json},
).map(lambda d: json.dumps(d).encode())
_raw_body = st.one_of(
    st.binary(max_size=64),
    st.sampled_from(
        [
            b"NaN",
            b"[Infinity]",
            b'{"instances": [[1, 2, 3, -Infinity]]}',
            b"[" * 2000,
            b'{"instances": ' + b"[" * 50000 + b"}",
            b'"\\ud800"',
            b"\xff\xfe",
        ]
    ),
    _json.map(lambda v: json.dumps(v).encode()),
)
_path = st.sampled_from(
    [
        f"/v1/models/{MODEL}:predict",
        f"/v2/models/{MODEL}/infer",
        f"/v2/models/{MODEL}/versions/1/infer",
        f"/v2/models/{MODEL}/versions/2/infer",
        "/v2/models/other/infer",
        f"/v1/models/{MODEL}",
        f"/v2/models/{MODEL}",
        "/v2/health/ready",
        "/metrics",
        "/v2/models//infer",
        "/v2/models/%00/infer",
    ]
)


@pytest.mark.tf
@settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE", "HEAD"]),
    path=_path,
    body=st.one_of(_v2_body, _v1_body, _raw_body),
    content_type=st.sampled_from(["application/json", "text/plain", ""]),
)
def test_fuzzed_requests_never_get_a_5xx(
    v2_server: ServerProcess, method: str, path: str, body: bytes, content_type: str
) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", v2_server.port, timeout=10)
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        conn.request(method, path, body=body if method != "GET" else None, headers=headers)
        response = conn.getresponse()
        payload = response.read()
    finally:
        conn.close()
    assert response.status < 500, (response.status, payload[:300])
    if method != "HEAD" and path != "/metrics":
        assert isinstance(json.loads(payload), dict)


@pytest.mark.tf
def test_server_serves_after_fuzzing(v2_server: ServerProcess) -> None:
    # Runs after the fuzz test (same module, file order): still ready, still predicting.
    assert v2_server.request("GET", "/v2/health/ready")[0] == 200
    check_conformance(_base(v2_server), MODEL, SAMPLES[0].tolist())
    assert v2_server.proc.poll() is None
    assert not [r for r in v2_server.records() if r.get("event") in ("internal_error", "connection_error")]


# --- fast paths agree with the general path ----------------------------------------------------------


def _decode_outcome(body: bytes, spec: InputSpec) -> tuple[str, Any]:
    try:
        batch, row_format = decode_predict_request(body, spec)
        return "ok", (batch.dtype.str, batch.tolist(), row_format)
    except ClientError as exc:
        return "error", exc.status


_leaf = st.one_of(
    st.integers(-(2**65), 2**65),
    st.floats(width=32, allow_nan=False),
    st.booleans(),
    st.none(),
    st.text(max_size=2),
    st.just(1e39),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    data=st.one_of(
        st.lists(st.lists(_leaf, min_size=3, max_size=3), min_size=1, max_size=3),
        st.lists(st.lists(st.integers(-300, 300), min_size=2, max_size=4), min_size=1, max_size=3),
        st.lists(st.one_of(_leaf, st.lists(_leaf, max_size=4)), min_size=1, max_size=3),
    ),
    dtype=st.sampled_from(["float32", "int8", "int32"]),
)
def test_orjson_decodes_like_the_standard_library(
    data: Any, dtype: str, monkeypatch_module: pytest.MonkeyPatch
) -> None:
    import serving.tensors as tensors

    spec = InputSpec("x", (3,), dtype)
    body = json.dumps({"instances": data}).encode()
    fast = _decode_outcome(body, spec)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tensors, "_orjson_loads", None)
        slow = _decode_outcome(body, spec)
    assert fast == slow

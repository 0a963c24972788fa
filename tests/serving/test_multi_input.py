"""Several named integer inputs (a recommender: user id, item id -> score) through both protocols.

The real server process on a fake recommender runtime (tests/serving/fake_server.py): TF Serving
rows and columns, V2 JSON, V2 binary (tritonclient.http defaults), gRPC (tritonclient.grpc),
malformed requests as 400s naming the input, metadata and batching.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serving_support import (
    FAKE_SERVER,
    RECOMMENDER_INPUTS,
    FakeRecommender,
    ServerProcess,
    ready_server,
)
from tritonclient.utils import InferenceServerException

from serving.config import ServingConfig
from serving.feeds import pack, unpack
from serving.v1 import decode_predict_request as decode_predict

MODEL = "recommender"
USERS = [3, 7, 11, 0]
ITEMS = [5, 2, 40, 79]
EXPECTED = FakeRecommender().predict(
    pack(RECOMMENDER_INPUTS, {"user_id": np.array(USERS)[:, None], "item_id": np.array(ITEMS)[:, None]})
)


def _config(**overrides: object) -> dict[str, object]:
    return {
        "model_name": MODEL,
        "artifact": "fake.tflite",
        "host": "127.0.0.1",
        "port": 0,
        "grpc_port": 0,
        "inputs": [
            {"name": "user_id", "shape": [1], "dtype": "int32"},
            {"name": "item_id", "shape": [1], "dtype": "int32"},
        ],
        **overrides,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from ready_server(_config(), tmp_path_factory.mktemp("multi"), FAKE_SERVER)


@pytest.fixture(scope="module")
def batching(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = _config(max_batch_size=16, max_latency_ms=20)
    yield from ready_server(config, tmp_path_factory.mktemp("multi-batch"), FAKE_SERVER)


def _scores(body: dict[str, object], key: str) -> np.ndarray:
    return np.asarray(body[key], dtype=np.float32).reshape(-1, 1)


def test_config_takes_several_named_inputs() -> None:
    config = ServingConfig.from_dict(_config())
    assert [spec.name for spec in config.inputs] == ["user_id", "item_id"]


def test_pack_and_unpack_keep_each_input() -> None:
    batch = pack(RECOMMENDER_INPUTS, {"user_id": np.array([[1], [2]]), "item_id": np.array([[3], [4]])})
    assert np.concatenate([batch, batch]).shape == (4,)
    tensors = unpack(batch[1:])
    assert tensors["user_id"].tolist() == [[2]] and tensors["item_id"].dtype == np.int32
    # A plain array is the batch of a model's one input, whatever its name.
    plain = np.zeros((3, 4), np.float32)
    assert unpack(plain, ["features"])["features"] is plain
    with pytest.raises(ValueError, match="feeds one input"):
        unpack(plain, ["user_id", "item_id"])


def test_inputs_pair_by_name_and_a_lone_input_by_default() -> None:
    from serving.feeds import pair

    assert pair(["item_id", "user_id"], ["user_id", "item_id"], "m") == {"user_id": "user_id", "item_id": "item_id"}
    assert pair(["serving_default_input_1"], ["features"], "m") == {"features": "serving_default_input_1"}
    assert pair(["user_id", "movie"], ["user_id", "item_id"], "m") == {"user_id": "user_id", "item_id": "movie"}
    with pytest.raises(ValueError, match="the config lists"):
        pair(["a", "b"], ["c", "d"], "m")
    with pytest.raises(ValueError, match="the config lists"):
        pair(["a", "b"], ["a"], "m")


def test_v1_rows_and_columns(server: ServerProcess) -> None:
    path = f"/v1/models/{MODEL}:predict"
    rows = [{"user_id": u, "item_id": i} for u, i in zip(USERS, ITEMS)]
    status, _, body = server.request("POST", path, {"instances": rows})
    assert status == 200, body
    np.testing.assert_allclose(_scores(body, "predictions"), EXPECTED, rtol=1e-6)
    nested = [{"user_id": [u], "item_id": [i]} for u, i in zip(USERS, ITEMS)]
    status, _, body = server.request("POST", path, {"instances": nested})
    assert status == 200, body
    np.testing.assert_allclose(_scores(body, "predictions"), EXPECTED, rtol=1e-6)
    status, _, body = server.request("POST", path, {"inputs": {"item_id": ITEMS, "user_id": USERS}})
    assert status == 200, body
    np.testing.assert_allclose(_scores(body, "outputs"), EXPECTED, rtol=1e-6)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"instances": [{"user_id": 3}]}, 'missing input "item_id"'),
        ({"instances": [{"user_id": 3, "item_id": 4, "age": 30}]}, 'unexpected input "age"'),
        ({"instances": [{"user_id": 3.5, "item_id": 4}]}, 'input "user_id" takes integers'),
        ({"instances": [{"user_id": 3.0, "item_id": 4}]}, 'input "user_id" takes integers'),
        ({"instances": [{"user_id": "3", "item_id": 4}]}, 'input "user_id"'),
        ({"instances": [{"user_id": 3, "item_id": 2**40}]}, 'input "item_id" takes int32 values'),
        ({"inputs": {"user_id": [1, 2], "item_id": [1]}}, 'input "item_id" has 1 samples but "user_id" has 2'),
        ({"inputs": {"user_id": [1]}}, 'missing input "item_id"'),
        ({"inputs": [1, 2]}, "one batch per input"),
        ({"instances": [3, 4]}, "expected an object with the inputs"),
    ],
)
def test_v1_malformed_requests_name_the_input(server: ServerProcess, body: object, fragment: str) -> None:
    status, _, answer = server.request("POST", f"/v1/models/{MODEL}:predict", body)
    assert status == 400 and fragment in answer["error"], answer


def test_v2_json(server: ServerProcess) -> None:
    body = {
        "id": "r1",
        "inputs": [
            {"name": "user_id", "shape": [4, 1], "datatype": "INT32", "data": USERS},
            {"name": "item_id", "shape": [4], "datatype": "INT64", "data": ITEMS},
        ],
    }
    status, _, answer = server.request("POST", f"/v2/models/{MODEL}/infer", body)
    assert status == 200, answer
    assert answer["id"] == "r1" and answer["outputs"][0]["shape"] == [4, 1]
    np.testing.assert_allclose(np.reshape(answer["outputs"][0]["data"], (-1, 1)), EXPECTED, rtol=1e-6)


@pytest.mark.parametrize(
    ("tensors", "fragment"),
    [
        ([{"name": "user_id", "shape": [1], "datatype": "INT32", "data": [1]}], 'missing input "item_id"'),
        (
            [
                {"name": "user_id", "shape": [1], "datatype": "FP32", "data": [1.0]},
                {"name": "item_id", "shape": [1], "datatype": "INT32", "data": [1]},
            ],
            'input "user_id" takes integers (INT32)',
        ),
        (
            [
                {"name": "user_id", "shape": [1], "datatype": "INT32", "data": [1.5]},
                {"name": "item_id", "shape": [1], "datatype": "INT32", "data": [1]},
            ],
            'input "user_id" takes integers',
        ),
        (
            [
                {"name": "user_id", "shape": [2], "datatype": "INT32", "data": [1, 2]},
                {"name": "item_id", "shape": [1], "datatype": "INT32", "data": [1]},
            ],
            'input "item_id" has 1 samples but "user_id" has 2',
        ),
        (
            [
                {"name": "user_id", "shape": [1], "datatype": "INT32", "data": [1]},
                {"name": "item_id", "shape": [1], "datatype": "INT32", "data": [1]},
                {"name": "extra", "shape": [1], "datatype": "INT32", "data": [1]},
            ],
            'unexpected input "extra"',
        ),
        (
            [
                {"name": "user_id", "shape": [1], "datatype": "INT32", "data": [1]},
                {"name": "user_id", "shape": [1], "datatype": "INT32", "data": [1]},
            ],
            'input "user_id" is given more than once',
        ),
    ],
)
def test_v2_malformed_requests_name_the_input(server: ServerProcess, tensors: list[object], fragment: str) -> None:
    status, _, answer = server.request("POST", f"/v2/models/{MODEL}/infer", {"inputs": tensors})
    assert status == 400 and fragment in answer["error"], answer


def _triton_inputs(module: object, users: list[int], items: list[int]) -> list[object]:
    user = module.InferInput("user_id", [len(users), 1], "INT32")  # type: ignore[attr-defined]
    user.set_data_from_numpy(np.array(users, dtype=np.int32)[:, None])
    item = module.InferInput("item_id", [len(items), 1], "INT32")  # type: ignore[attr-defined]
    item.set_data_from_numpy(np.array(items, dtype=np.int32)[:, None])
    return [user, item]


def test_v2_binary_through_tritonclient_http_defaults(server: ServerProcess) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        metadata = client.get_model_metadata(MODEL)
        assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
            ("user_id", "INT32", [-1, 1]),
            ("item_id", "INT32", [-1, 1]),
        ]
        result = client.infer(MODEL, _triton_inputs(httpclient, USERS, ITEMS))
        np.testing.assert_allclose(result.as_numpy("output_0"), EXPECTED, rtol=1e-6)
        wrong = httpclient.InferInput("item_id", [4, 1], "FP32")
        wrong.set_data_from_numpy(np.zeros((4, 1), np.float32))
        with pytest.raises(InferenceServerException, match='input "item_id" takes integers'):
            client.infer(MODEL, [_triton_inputs(httpclient, USERS, ITEMS)[0], wrong])
    finally:
        client.close()


def test_grpc_through_tritonclient_grpc(server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        metadata = client.get_model_metadata(MODEL)
        assert [t.name for t in metadata.inputs] == ["user_id", "item_id"]
        result = client.infer(MODEL, _triton_inputs(grpcclient, USERS, ITEMS))
        np.testing.assert_allclose(result.as_numpy("output_0"), EXPECTED, rtol=1e-6)
        with pytest.raises(InferenceServerException, match='missing input "item_id"'):
            client.infer(MODEL, _triton_inputs(grpcclient, USERS, ITEMS)[:1])
        with pytest.raises(InferenceServerException, match='"user_id" has 4'):
            client.infer(MODEL, _triton_inputs(grpcclient, USERS, ITEMS)[:1] + _triton_inputs(grpcclient, [1], [2])[1:])
    finally:
        client.close()


def test_v1_metadata_lists_every_input(server: ServerProcess) -> None:
    status, _, body = server.request("GET", f"/v1/models/{MODEL}/metadata")
    assert status == 200
    inputs = body["metadata"]["signature_def"]["signature_def"]["serving_default"]["inputs"]
    assert sorted(inputs) == ["item_id", "user_id"] and inputs["user_id"]["dtype"] == "DT_INT32"


def test_batched_callers_each_get_their_own_score(batching: ServerProcess) -> None:
    rng = np.random.default_rng(3)
    pairs = [(int(u), int(i)) for u, i in zip(rng.integers(0, 50, 40), rng.integers(0, 80, 40))]
    model = FakeRecommender()

    def one(pair: tuple[int, int]) -> float:
        status, _, body = batching.request(
            "POST", f"/v1/models/{MODEL}:predict", {"instances": [{"user_id": pair[0], "item_id": pair[1]}]}
        )
        assert status == 200, body
        return float(np.ravel(body["predictions"])[0])

    with ThreadPoolExecutor(16) as pool:
        scores = list(pool.map(one, pairs))
    for pair, score in zip(pairs, scores):
        alone = model.predict(
            pack(RECOMMENDER_INPUTS, {"user_id": np.array([[pair[0]]]), "item_id": np.array([[pair[1]]])})
        )
        assert score == pytest.approx(float(alone[0, 0]), rel=1e-6)
    conn = http.client.HTTPConnection("127.0.0.1", batching.port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    values = dict(line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("modelstack_batch_size_"))
    assert float(values["modelstack_batch_size_sum"]) >= 40  # every caller's sample ran


def test_decode_predict_is_pure() -> None:
    batch, rows = decode_predict(b'{"instances": [{"user_id": 1, "item_id": 2}]}', RECOMMENDER_INPUTS)
    assert rows and batch["item_id"].tolist() == [[2]]


# --- ids outside the range the model knows --------------------------------------------------------

RANGES = {"user_id": [0, 49], "item_id": [0, 79]}  # the fake recommender's vocabularies


@pytest.fixture(scope="module")
def ranged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = _config(
        max_batch_size=8,
        inputs=[
            {"name": name, "shape": [1], "dtype": "int32", "range": RANGES[name]} for name in ("user_id", "item_id")
        ],
    )
    yield from ready_server(config, tmp_path_factory.mktemp("multi-ranged"), FAKE_SERVER)


def test_config_range_is_checked() -> None:
    def problems(inputs: list[dict[str, object]]) -> str:
        with pytest.raises(ValueError) as caught:
            ServingConfig.from_dict(_config(inputs=inputs))
        return str(caught.value)

    assert "inputs[0].range: applies to integer inputs only" in problems(
        [{"name": "x", "shape": [4], "dtype": "float32", "range": [0, 1]}]
    )
    for bad in ([5, 1], [0], [0, 2**31], [0.0, 3], "0..9"):
        message = problems([{"name": "x", "shape": [1], "dtype": "int32", "range": bad}])
        assert "inputs[0].range: must be [low, high], integers with low <= high within int32" in message, bad
    config = ServingConfig.from_dict(_config(inputs=[{"name": "x", "shape": [1], "dtype": "int64", "range": [0, 9]}]))
    assert config.input.range == (0, 9)


@pytest.mark.parametrize(
    ("users", "items", "fragment"),
    [
        ([1, 50], [2, 3], 'input "user_id" takes ids in 0..49; sample 1 has 50'),
        ([1, 2], [-1, 3], 'input "item_id" takes ids in 0..79; sample 0 has -1'),
    ],
)
def test_ids_outside_the_range_are_400s_over_every_protocol(
    ranged: ServerProcess, users: list[int], items: list[int], fragment: str
) -> None:
    rows = [{"user_id": u, "item_id": i} for u, i in zip(users, items)]
    status, _, answer = ranged.request("POST", f"/v1/models/{MODEL}:predict", {"instances": rows})
    assert status == 400 and fragment in answer["error"], answer
    tensors = [
        {"name": "user_id", "shape": [2, 1], "datatype": "INT32", "data": users},
        {"name": "item_id", "shape": [2, 1], "datatype": "INT64", "data": items},
    ]
    status, _, answer = ranged.request("POST", f"/v2/models/{MODEL}/infer", {"inputs": tensors})
    assert status == 400 and fragment in answer["error"], answer
    client = httpclient.InferenceServerClient(ranged.http_url)
    try:
        with pytest.raises(InferenceServerException, match=fragment):
            client.infer(MODEL, _triton_inputs(httpclient, users, items))
    finally:
        client.close()
    grpc_client = grpcclient.InferenceServerClient(ranged.grpc_url)
    try:
        with pytest.raises(InferenceServerException, match=fragment) as caught:
            grpc_client.infer(MODEL, _triton_inputs(grpcclient, users, items))
        assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    finally:
        grpc_client.close()
    status, _, answer = ranged.request(
        "POST",
        f"/v1/models/{MODEL}:predict",
        {"instances": [{"user_id": 49, "item_id": 79}, {"user_id": 0, "item_id": 0}]},
    )
    assert status == 200, answer  # both ends of each range are ids the model knows

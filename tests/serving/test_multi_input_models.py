"""The recommender example's model (two integer inputs) converted to LiteRT and exported to ONNX, served by the real server over both protocols."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serving_support import ServerProcess, ready_server

pytestmark = pytest.mark.tf


Exported = tuple[Path, np.ndarray, np.ndarray, np.ndarray, Path]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    import keras
    import tensorflow as tf
    import tf2onnx

    from modelprep.examples.recommender import build, ratings

    keras.utils.set_random_seed(5)
    users, items, score = ratings(4000)
    model = build()
    model.compile(optimizer="adam", loss="mse")
    model.fit({"user_id": users, "item_id": items}, score, epochs=2, batch_size=256, verbose=0)
    spec = (tf.TensorSpec((None, 1), tf.int32, name="user_id"), tf.TensorSpec((None, 1), tf.int32, name="item_id"))
    function = tf.function(lambda u, i: model({"user_id": u, "item_id": i}, training=False))
    with contextlib.redirect_stdout(io.StringIO()):
        proto, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=17)
    path = tmp_path_factory.mktemp("recommender") / "model.onnx"
    path.write_bytes(proto.SerializeToString())
    expected = model.predict({"user_id": users[:8], "item_id": items[:8]}, verbose=0)
    from modelprep.families.keras.convert import convert_litert

    litert = path.with_suffix(".tflite")
    litert.write_bytes(convert_litert(model, "none", None, where="test").artifact)
    return path, users[:8], items[:8], expected, litert


@pytest.fixture(scope="module", params=["onnx", "litert"])
def server(
    request: pytest.FixtureRequest, exported: Exported, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    config = {
        "model_name": "recommender",
        "artifact": str(exported[0] if request.param == "onnx" else exported[4]),
        "host": "127.0.0.1",
        "port": 0,
        "grpc_port": 0,
        "inputs": [
            {"name": "user_id", "shape": [1], "dtype": "int32"},
            {"name": "item_id", "shape": [1], "dtype": "int32"},
        ],
        "max_batch_size": 8,
    }
    yield from ready_server(config, tmp_path_factory.mktemp("recommender-server"))


def test_recommender_over_v1_v2_binary_and_grpc(server: ServerProcess, exported: Exported) -> None:
    _, users, items, expected, _ = exported
    rows = [{"user_id": int(u), "item_id": int(i)} for u, i in zip(users[:, 0], items[:, 0])]
    status, _, body = server.request("POST", "/v1/models/recommender:predict", {"instances": rows})
    assert status == 200, body
    np.testing.assert_allclose(np.asarray(body["predictions"], np.float32), expected, rtol=1e-4, atol=1e-5)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    try:
        user = grpcclient.InferInput("user_id", list(users.shape), "INT32")
        user.set_data_from_numpy(users.astype(np.int32))
        item = grpcclient.InferInput("item_id", list(items.shape), "INT32")
        item.set_data_from_numpy(items.astype(np.int32))
        result = client.infer("recommender", [user, item])
        np.testing.assert_allclose(result.as_numpy("output_0"), expected, rtol=1e-4, atol=1e-5)
    finally:
        client.close()
    http = httpclient.InferenceServerClient(server.http_url)
    try:
        user = httpclient.InferInput("user_id", list(users.shape), "INT32")
        user.set_data_from_numpy(users.astype(np.int32))
        item = httpclient.InferInput("item_id", list(items.shape), "INT32")
        item.set_data_from_numpy(items.astype(np.int32))
        result = http.infer("recommender", [item, user])  # in any order: by name
        np.testing.assert_allclose(result.as_numpy("output_0"), expected, rtol=1e-4, atol=1e-5)
    finally:
        http.close()


def test_a_client_sending_unknown_ids_fails_alone(server: ServerProcess, exported: Exported) -> None:
    """Batching on (8), no range configured: user 200 is outside the embedding, the runtime fails on
    it. 6 good clients and 2 bad ones at once: every good request is answered, every bad one fails."""
    import http.client
    import json
    from concurrent.futures import ThreadPoolExecutor

    from modelprep.examples.recommender import USERS

    _, users, items, expected, _ = exported

    def client(index: int) -> list[tuple[bool, int]]:
        bad = index >= 6
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        outcomes = []
        try:
            for n in range(40):
                row = n % len(users)
                user = USERS if bad else int(users[row, 0])  # USERS: one past the last id
                body = json.dumps({"instances": [{"user_id": user, "item_id": int(items[row, 0])}]})
                conn.request("POST", "/v1/models/recommender:predict", body=body)
                response = conn.getresponse()
                answer = json.loads(response.read())
                if response.status == 200:
                    assert not bad
                    np.testing.assert_allclose(answer["predictions"][0], expected[row], rtol=1e-4, atol=1e-5)
                outcomes.append((bad, response.status))
        finally:
            conn.close()
        return outcomes

    with ThreadPoolExecutor(8) as pool:
        outcomes = [o for result in pool.map(client, range(8)) for o in result]
    good = [status for bad, status in outcomes if not bad]
    bad = [status for bad, status in outcomes if bad]
    assert good == [200] * 240
    assert len(bad) == 80 and 200 not in bad

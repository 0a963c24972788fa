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
def server(request: pytest.FixtureRequest, exported: Exported, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    config = {
        "model_name": "recommender", "artifact": str(exported[0] if request.param == "onnx" else exported[4]), "host": "127.0.0.1", "port": 0, "grpc_port": 0,
        "inputs": [{"name": "user_id", "shape": [1], "dtype": "int32"}, {"name": "item_id", "shape": [1], "dtype": "int32"}],
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

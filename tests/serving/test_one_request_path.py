"""Every transport through the one request path (``serving.request``): a several-input model and a
text model, each asked in every request form over real sockets with the standard clients.

TF Serving rows (V1), V2 JSON, V2 binary (tritonclient.http with binary data) and gRPC
(tritonclient.grpc) must give the same answer, and the same client mistake must be a 400 /
INVALID_ARGUMENT naming the input in every form. The transports' readers are also checked to
decode into the same ``InferRequest`` bound to the same batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serving_support import FAKE_SERVER, RECOMMENDER_INPUTS, FakeRecommender, ServerProcess, ready_server
from tritonclient.utils import InferenceServerException

from serving import v1, v2
from serving.config import InputSpec
from serving.feeds import pack
from serving.grpc_service import read_infer_request as read_grpc_request
from serving.proto import grpc_service_pb2 as pb
from serving.request import InferRequest, bind

USERS = [3, 7, 11, 0]
ITEMS = [5, 2, 40, 79]
SCORES = FakeRecommender().predict(
    pack(RECOMMENDER_INPUTS, {"user_id": np.array(USERS)[:, None], "item_id": np.array(ITEMS)[:, None]})
)
TEXTS = ["hello", "hi", "a longer text"]
TEXT_ANSWER = [[5.0, 1.0], [2.0, 1.0], [13.0, 1.0]]


def _server(name: str, inputs: list[dict[str, Any]], folder: Any) -> Iterator[ServerProcess]:
    config = {
        "model_name": name,
        "artifact": "fake.tflite",
        "host": "127.0.0.1",
        "port": 0,
        "grpc_port": 0,
        "inputs": inputs,
        "max_batch_size": 8,
        "max_latency_ms": 5,
    }
    yield from ready_server(config, folder, FAKE_SERVER)


@pytest.fixture(scope="module")
def recommender(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    inputs = [{"name": "user_id", "shape": [1], "dtype": "int32"}, {"name": "item_id", "shape": [1], "dtype": "int32"}]
    yield from _server("recommender", inputs, tmp_path_factory.mktemp("one-path-rec"))


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from _server(
        "texts", [{"name": "text", "shape": [], "dtype": "string"}], tmp_path_factory.mktemp("one-path-text")
    )


# --- the four request forms, each answered through the one path ------------------------------------

Ask = Callable[[ServerProcess, str, dict[str, np.ndarray]], np.ndarray]


def _v1(server: ServerProcess, model: str, tensors: dict[str, np.ndarray]) -> np.ndarray:
    columns = {
        name: [v.item() if isinstance(v, np.generic) else v for v in values.reshape(-1)]
        for name, values in tensors.items()
    }
    rows = [{name: columns[name][i] for name in columns} for i in range(len(next(iter(columns.values()))))]
    if len(rows[0]) == 1:  # one input: each row is the sample itself
        rows = [next(iter(row.values())) for row in rows]
    status, _, body = server.request("POST", f"/v1/models/{model}:predict", {"instances": rows})
    if status != 200:
        raise InferenceServerException(str(body), status=str(status))
    return np.asarray(body["predictions"], dtype=np.float32)


def _http_input(name: str, values: np.ndarray, binary: bool) -> httpclient.InferInput:
    datatype = "BYTES" if values.dtype == object else "INT32" if values.dtype.kind in "iu" else "FP32"
    tensor = httpclient.InferInput(name, list(values.shape), datatype)
    tensor.set_data_from_numpy(values, binary_data=binary)
    return tensor


def _v2_json(server: ServerProcess, model: str, tensors: dict[str, np.ndarray]) -> np.ndarray:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    inputs = [_http_input(name, values, binary=False) for name, values in tensors.items()]
    outputs = [httpclient.InferRequestedOutput("output_0", binary_data=False)]
    return client.infer(model, inputs, outputs=outputs).as_numpy("output_0")


def _v2_binary(server: ServerProcess, model: str, tensors: dict[str, np.ndarray]) -> np.ndarray:
    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    inputs = [_http_input(name, values, binary=True) for name, values in tensors.items()]
    return client.infer(model, inputs).as_numpy("output_0")


def _grpc(server: ServerProcess, model: str, tensors: dict[str, np.ndarray]) -> np.ndarray:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = []
    for name, values in tensors.items():
        datatype = "BYTES" if values.dtype == object else "INT32" if values.dtype.kind in "iu" else "FP32"
        tensor = grpcclient.InferInput(name, list(values.shape), datatype)
        tensor.set_data_from_numpy(values)
        inputs.append(tensor)
    return client.infer(model, inputs).as_numpy("output_0")


FORMS: dict[str, Ask] = {"v1": _v1, "v2-json": _v2_json, "v2-binary": _v2_binary, "grpc": _grpc}


@pytest.mark.parametrize("form", FORMS)
def test_a_several_input_model_answers_every_form_alike(recommender: ServerProcess, form: str) -> None:
    tensors = {"user_id": np.array(USERS, np.int32)[:, None], "item_id": np.array(ITEMS, np.int32)[:, None]}
    scores = FORMS[form](recommender, "recommender", tensors)
    np.testing.assert_allclose(np.asarray(scores, np.float32).reshape(-1, 1), SCORES, rtol=1e-6)


@pytest.mark.parametrize("form", FORMS)
def test_a_several_input_model_refuses_a_float_id_in_every_form(recommender: ServerProcess, form: str) -> None:
    tensors = {"user_id": np.array([[3.5]], np.float32), "item_id": np.array([[4]], np.int32)}
    with pytest.raises(InferenceServerException) as caught:
        FORMS[form](recommender, "recommender", tensors)
    assert 'input "user_id" takes integers' in caught.value.message()
    assert str(caught.value.status()) in ("400", "StatusCode.INVALID_ARGUMENT")


@pytest.mark.parametrize("form", FORMS)
def test_a_text_model_answers_every_form_alike(texts: ServerProcess, form: str) -> None:
    answer = FORMS[form](texts, "texts", {"text": np.array(TEXTS, dtype=object)})
    assert np.asarray(answer).tolist() == TEXT_ANSWER


@pytest.mark.parametrize("form", FORMS)
def test_a_text_model_refuses_an_empty_text_in_every_form(texts: ServerProcess, form: str) -> None:
    with pytest.raises(InferenceServerException) as caught:
        FORMS[form](texts, "texts", {"text": np.array(["fine", " "], dtype=object)})
    assert "[1] is an empty string" in caught.value.message()


# --- the readers: one InferRequest, one binding --------------------------------------------------


def _all_readers(
    inputs: list[InputSpec], v1_body: bytes, v2_body: bytes, grpc_message: pb.ModelInferRequest
) -> list[InferRequest]:
    return [
        v1.read_predict_request(v1_body, inputs)[0],
        v2.read_infer_request(v2_body)[0],
        read_grpc_request(grpc_message),
    ]


def test_every_reader_makes_one_request_that_binds_to_the_same_batch() -> None:
    v1_body = b'{"instances": [{"user_id": 3, "item_id": 5}, {"user_id": 7, "item_id": 2}]}'
    v2_body = (
        b'{"inputs": [{"name": "item_id", "shape": [2], "datatype": "INT32", "data": [5, 2]},'
        b' {"name": "user_id", "shape": [2, 1], "datatype": "INT64", "data": [[3], [7]]}]}'
    )
    message = pb.ModelInferRequest(
        model_name="recommender",
        inputs=[
            pb.ModelInferRequest.InferInputTensor(name="user_id", datatype="INT32", shape=[2, 1]),
            pb.ModelInferRequest.InferInputTensor(name="item_id", datatype="INT32", shape=[2]),
        ],
        raw_input_contents=[np.array([3, 7], "<i4").tobytes(), np.array([5, 2], "<i4").tobytes()],
    )
    batches = [bind(r, RECOMMENDER_INPUTS) for r in _all_readers(RECOMMENDER_INPUTS, v1_body, v2_body, message)]
    for batch in batches:
        assert batch.dtype == batches[0].dtype and batch.tolist() == batches[0].tolist()
    assert batches[0]["user_id"].tolist() == [[3], [7]] and batches[0]["item_id"].tolist() == [[5], [2]]


def test_one_input_is_a_list_of_one() -> None:
    spec = [InputSpec("features", (2,), "float32")]
    request = v2.read_infer_request(
        b'{"inputs": [{"name": "features", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]}'
    )[0]
    assert len(request.inputs) == 1 and request.inputs[0].name == "features"
    batch = bind(request, spec)
    assert batch.dtype == np.float32 and batch.tolist() == [[1.0, 2.0]]
    text = v1.read_predict_request(b'{"instances": ["hello"]}', [InputSpec("text", (), "string")])[0]
    assert bind(text, [InputSpec("text", (), "string")]).tolist() == ["hello"]

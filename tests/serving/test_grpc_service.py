"""The V2 gRPC service: tritonclient.grpc in its defaults, typed contents, errors, API key, drain.

Servers are ``python -m serving.server`` subprocesses with ``grpc_port: 0`` (an ephemeral port,
read from the "listening" log line) on a tiny ONNX model (tests/serving/v2_fixtures.py).
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException
from v2_fixtures import API_KEY, MODEL, SAMPLES, V2Server, expected_outputs, server_config, started, tiny_onnx_model

from serving.proto import grpc_service_pb2 as pb
from serving.proto import grpc_service_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_onnx_model(tmp_path_factory.mktemp("grpc-model"))


@pytest.fixture(scope="module")
def server(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[V2Server]:
    yield from started(server_config(model_path, max_batch_size=8), tmp_path_factory.mktemp("grpc-server"))


@pytest.fixture(scope="module")
def keyed(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[V2Server]:
    config = server_config(model_path, api_key_env="V2_TEST_API_KEY")
    yield from started(config, tmp_path_factory.mktemp("grpc-keyed"), env={"V2_TEST_API_KEY": API_KEY})


def _stub(server: V2Server) -> tuple[grpc.Channel, pb_grpc.GRPCInferenceServiceStub]:
    channel = grpc.insecure_channel(server.grpc_url)
    return channel, pb_grpc.GRPCInferenceServiceStub(channel)


def _infer_request(**overrides: object) -> pb.ModelInferRequest:
    fields: dict[str, object] = {
        "model_name": MODEL,
        "inputs": [pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[1, 4])],
        "raw_input_contents": [SAMPLES[:1].tobytes()],
    }
    fields.update(overrides)
    return pb.ModelInferRequest(**fields)


# --- the standard client --------------------------------------------------------------------------


def test_tritonclient_grpc_health_and_metadata(server: V2Server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not _raises(lambda: client.is_model_ready("other"))
    meta = client.get_model_metadata(MODEL, as_json=True)
    assert meta["name"] == MODEL and meta["versions"] == ["1"] and meta["platform"] == "onnxruntime_onnx"
    assert meta["inputs"] == [{"name": "features", "datatype": "FP32", "shape": ["-1", "4"]}]
    assert meta["outputs"] == [{"name": "output_0", "datatype": "FP32", "shape": ["-1", "3"]}]
    server_meta = client.get_server_metadata(as_json=True)
    assert server_meta["name"] == "modelstack" and "binary_tensor_data" in server_meta["extensions"]


def _raises(call: object) -> bool:
    try:
        call()  # type: ignore[operator]
    except InferenceServerException:
        return False
    return True


def test_tritonclient_grpc_infer_in_its_defaults(server: V2Server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = [grpcclient.InferInput("features", [5, 4], "FP32")]
    inputs[0].set_data_from_numpy(SAMPLES)
    result = client.infer(MODEL, inputs, request_id="req-7")
    output = result.as_numpy("output_0")
    assert output.shape == (5, 3) and output.dtype == np.float32
    np.testing.assert_allclose(output, expected_outputs(SAMPLES), rtol=1e-5)
    assert result.get_response().id == "req-7" and result.get_response().model_version == "1"
    # Asked for by name, and an integer tensor converted to the float input.
    outputs = [grpcclient.InferRequestedOutput("output_0")]
    ints = np.array([[1, 2, 3, 4]], dtype=np.int32)
    inputs = [grpcclient.InferInput("features", [1, 4], "INT32")]
    inputs[0].set_data_from_numpy(ints)
    output = client.infer(MODEL, inputs, outputs=outputs, model_version="1").as_numpy("output_0")
    np.testing.assert_allclose(output, expected_outputs(ints), rtol=1e-5)


def test_tritonclient_grpc_many_concurrent_calls_batch_together(server: V2Server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    failures: list[BaseException] = []

    def call(row: int) -> None:
        try:
            inputs = [grpcclient.InferInput("features", [1, 4], "FP32")]
            inputs[0].set_data_from_numpy(SAMPLES[row : row + 1])
            for _ in range(20):
                output = client.infer(MODEL, inputs).as_numpy("output_0")
                np.testing.assert_allclose(output, expected_outputs(SAMPLES[row : row + 1]), rtol=1e-5)
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=call, args=(i % 5,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures[:3]


def test_tritonclient_grpc_bad_input_is_invalid_argument_with_the_fix(server: V2Server) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    words = [grpcclient.InferInput("features", [1, 4], "BYTES")]
    words[0].set_data_from_numpy(np.array([[b"a", b"b", b"c", b"d"]], dtype=object))
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, words)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert 'inputs[0].datatype: input "features" takes FP32' in info.value.message()
    assert 'got "BYTES"' in info.value.message()


# --- the protocol as raw messages -----------------------------------------------------------------


def test_typed_contents_are_accepted_for_every_typed_datatype(server: V2Server) -> None:
    channel, stub = _stub(server)
    with channel:
        cases = {
            "FP32": ("fp32_contents", SAMPLES[:2].ravel().tolist()),
            "FP64": ("fp64_contents", SAMPLES[:2].ravel().tolist()),
            "INT8": ("int_contents", [1, -2, 3, 4, 5, 6, 7, -8]),
            "INT64": ("int64_contents", [1, 2, 3, 4, 5, 6, 7, 8]),
            "UINT16": ("uint_contents", [1, 2, 3, 4, 5, 6, 7, 8]),
            "UINT64": ("uint64_contents", [1, 2, 3, 4, 5, 6, 7, 8]),
        }
        for datatype, (field, values) in cases.items():
            tensor = pb.ModelInferRequest.InferInputTensor(
                name="features", datatype=datatype, shape=[2, 4], contents=pb.InferTensorContents(**{field: values})
            )
            response = stub.ModelInfer(pb.ModelInferRequest(model_name=MODEL, inputs=[tensor], id="x"))
            assert response.id == "x" and list(response.outputs[0].shape) == [2, 3], datatype
            output = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(2, 3)
            batch = np.array(values, dtype=np.float64).astype(np.float32).reshape(2, 4)
            np.testing.assert_allclose(output, expected_outputs(batch), rtol=1e-5, err_msg=datatype)


@pytest.mark.parametrize(
    ("overrides", "code", "message"),
    [
        ({"model_name": "other"}, grpc.StatusCode.NOT_FOUND, 'model "other" is not served here'),
        ({"model_version": "2"}, grpc.StatusCode.NOT_FOUND, 'no version "2"; the only version is 1'),
        ({"inputs": []}, grpc.StatusCode.INVALID_ARGUMENT, 'missing input "features"; this model takes "features"'),
        (
            {"raw_input_contents": [b"\x00" * 12]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "12 bytes of binary data, but shape [1, 4] of FP32 needs 16",
        ),
        ({"raw_input_contents": [b"\x00" * 16, b""]}, grpc.StatusCode.INVALID_ARGUMENT, "one entry per input"),
        (
            {"raw_input_contents": [np.array([1, 2, np.nan, 4], dtype="<f4").tobytes()]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "non-finite values",
        ),
        (
            {"raw_input_contents": []},
            grpc.StatusCode.INVALID_ARGUMENT,
            "contents.fp32_contents: shape [1, 4] needs 4 element(s), got 0",
        ),
        (
            {"outputs": [pb.ModelInferRequest.InferRequestedOutputTensor(name="probs")]},
            grpc.StatusCode.INVALID_ARGUMENT,
            'the model has one output, "output_0"',
        ),
        (
            {"inputs": [pb.ModelInferRequest.InferInputTensor(name="x", datatype="FP32", shape=[1, 4])]},
            grpc.StatusCode.INVALID_ARGUMENT,
            'inputs[0].name: unexpected input "x"; this model takes "features"',
        ),
        (
            {"inputs": [pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[1, 5])]},
            grpc.StatusCode.INVALID_ARGUMENT,
            "takes shape [-1, 4] (batch first, at least 1), got [1, 5]",
        ),
        (
            {
                "inputs": [
                    pb.ModelInferRequest.InferInputTensor(
                        name="features",
                        datatype="FP16",
                        shape=[1, 4],
                        contents=pb.InferTensorContents(fp32_contents=[1] * 4),
                    )
                ],
                "raw_input_contents": [],
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            "FP16 has no typed contents field; send it as raw_input_contents",
        ),
        (
            {
                "inputs": [
                    pb.ModelInferRequest.InferInputTensor(
                        name="features",
                        datatype="INT8",
                        shape=[1, 4],
                        contents=pb.InferTensorContents(int_contents=[1, 2, 300, 4]),
                    )
                ],
                "raw_input_contents": [],
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            "INT8 takes values in -128..127",
        ),
        (
            {
                "inputs": [
                    pb.ModelInferRequest.InferInputTensor(
                        name="features",
                        datatype="INT32",
                        shape=[1, 4],
                        contents=pb.InferTensorContents(fp32_contents=[1] * 4),
                    )
                ],
                "raw_input_contents": [],
            },
            grpc.StatusCode.INVALID_ARGUMENT,
            "INT32 elements go in int_contents",
        ),
    ],
)
def test_model_infer_rejects_bad_requests_with_a_message(
    server: V2Server, overrides: dict[str, object], code: grpc.StatusCode, message: str
) -> None:
    channel, stub = _stub(server)
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(_infer_request(**overrides))
    assert info.value.code() == code and message in info.value.details(), info.value.details()


def test_messages_over_the_body_limit_are_refused(server: V2Server) -> None:
    channel, stub = _stub(server)
    big = np.zeros((5000, 4), dtype=np.float32)  # 80 KB > max_body_bytes 64 KiB
    tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=[5000, 4])
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.ModelInfer(pb.ModelInferRequest(model_name=MODEL, inputs=[tensor], raw_input_contents=[big.tobytes()]))
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_grpc_calls_are_counted_and_logged(server: V2Server) -> None:
    import urllib.request

    channel, stub = _stub(server)
    with channel:
        stub.ModelInfer(_infer_request())
        with pytest.raises(grpc.RpcError):
            stub.ModelInfer(_infer_request(model_name="other"))
    time.sleep(0.2)  # the log is written every 10 ms
    with urllib.request.urlopen(f"http://{server.http_url}/metrics", timeout=5) as response:
        metrics = response.read().decode()
    assert 'modelstack_requests_total{route="grpc_infer",status="200"}' in metrics
    assert 'modelstack_requests_total{route="grpc_infer",status="404"}' in metrics
    lines = [r for r in server.records() if r.get("method") == "gRPC"]
    assert any(
        r["path"] == "/inference.GRPCInferenceService/ModelInfer"
        and r["grpc_code"] == "NOT_FOUND"
        and r["status"] == 404
        for r in lines
    )
    ok = next(r for r in lines if r["grpc_code"] == "OK")
    assert ok["status"] == 200 and "127.0.0.1" in ok["remote"] and ok["duration_ms"] >= 0


def test_access_log_lines_of_both_protocols_share_one_format() -> None:
    from serving.logs import _request_line

    http = json.loads(_request_line((0.0, "POST", '/v1/"x"', 200, 0.0012, "10.0.0.1", None)))
    call = json.loads(
        _request_line(
            (0.0, "gRPC", "/inference.GRPCInferenceService/ModelInfer", 404, 0.0012, 'ipv6:[::1]:5"0', "NOT_FOUND")
        )
    )
    assert list(http) == ["ts", "event", "method", "path", "status", "duration_ms", "remote"]
    assert list(call) == ["ts", "event", "method", "path", "status", "grpc_code", "duration_ms", "remote"]
    assert http["path"] == '/v1/"x"' and call["remote"] == 'ipv6:[::1]:5"0'  # escaped where needed
    assert call["grpc_code"] == "NOT_FOUND" and call["duration_ms"] == http["duration_ms"] == 1.2


# --- API key, readiness, drain --------------------------------------------------------------------


def test_api_key_rule_is_the_http_one(keyed: V2Server) -> None:
    client = grpcclient.InferenceServerClient(keyed.grpc_url)
    assert client.is_server_live() and client.is_server_ready()  # open, like the HTTP probes
    inputs = [grpcclient.InferInput("features", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(SAMPLES[:1])
    with pytest.raises(InferenceServerException) as info:
        client.infer(MODEL, inputs)
    assert info.value.status() == "StatusCode.UNAUTHENTICATED" and "Bearer" in info.value.message()
    with pytest.raises(InferenceServerException):
        client.infer(MODEL, inputs, headers={"authorization": "Bearer wrong"})
    with pytest.raises(InferenceServerException):
        client.get_model_metadata(MODEL)
    for headers in ({"authorization": f"Bearer {API_KEY}"}, {"x-api-key": API_KEY}):
        output = client.infer(MODEL, inputs, headers=headers).as_numpy("output_0")
        np.testing.assert_allclose(output, expected_outputs(SAMPLES[:1]), rtol=1e-5)


def test_sigterm_drains_grpc_calls_in_flight(model_path: Path, tmp_path: Path) -> None:
    server = V2Server(server_config(model_path), tmp_path)
    try:
        server.wait_for("ready")
        client = grpcclient.InferenceServerClient(server.grpc_url)
        inputs = [grpcclient.InferInput("features", [1, 4], "FP32")]
        inputs[0].set_data_from_numpy(SAMPLES[:1])
        results: list[object] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                try:
                    results.append(client.infer(MODEL, inputs))
                except InferenceServerException as exc:
                    errors.append(exc)
                    return

        worker = threading.Thread(target=loop)
        worker.start()
        time.sleep(0.5)
        assert server.stop() == 0  # SIGTERM: exits 0 after draining
        stop.set()
        worker.join(timeout=10)
        assert results
        events = [r.get("event") for r in server.records()]
        assert "draining" in events and events[-1] == "stopped"
        # A call that reaches the server after the drain began is refused (UNAVAILABLE, or
        # CANCELLED when it raced the shutdown inside grpc core), never left hanging.
        assert all(exc.status() in ("StatusCode.UNAVAILABLE", "StatusCode.CANCELLED") for exc in errors), [
            str(e) for e in errors
        ]
    finally:
        server.stop()


def test_grpc_port_taken_is_a_bind_error(model_path: Path, tmp_path: Path, server: V2Server) -> None:
    clash = V2Server(server_config(model_path, grpc_port=server.grpc_port), tmp_path)
    assert clash.proc.wait(timeout=20) == 1
    assert any(r.get("event") == "bind_error" for r in clash.records()), clash.lines


def test_descriptors_match_the_standard_client_field_by_field() -> None:
    """Same message names and field numbers as tritonclient's copy of the protocol."""
    from tritonclient.grpc import service_pb2 as triton

    for name in (
        "ServerLiveResponse",
        "ServerReadyResponse",
        "ModelReadyRequest",
        "ModelReadyResponse",
        "ServerMetadataResponse",
        "ModelMetadataRequest",
        "ModelMetadataResponse",
        "ModelInferRequest",
        "ModelInferResponse",
        "InferParameter",
        "InferTensorContents",
    ):
        ours, theirs = getattr(pb, name).DESCRIPTOR, getattr(triton, name).DESCRIPTOR
        assert ours.full_name == theirs.full_name
        _same_fields(ours, theirs)
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    assert service.full_name == "inference.GRPCInferenceService"


def _same_fields(ours: object, theirs: object) -> None:
    for field in ours.fields:  # type: ignore[attr-defined]
        other = theirs.fields_by_name[field.name]  # type: ignore[attr-defined]
        assert (field.number, field.type, field.is_repeated) == (other.number, other.type, other.is_repeated), (
            field.full_name
        )
        if field.message_type is not None:
            _same_fields(field.message_type, other.message_type)


def test_serving_config_grpc_port() -> None:
    from serving.config import ServingConfig

    base = {
        "model_name": MODEL,
        "artifact": "m.tflite",
        "inputs": [{"name": "features", "shape": [4], "dtype": "float32"}],
    }
    assert ServingConfig.from_dict(base).grpc_port == 8001  # absent: the spec's default (serving.config.GRPC_PORT)
    assert ServingConfig.from_dict({**base, "grpc_port": None}).grpc_port is None  # null: gRPC off
    assert ServingConfig.from_dict({**base, "grpc_port": 8001}).grpc_port == 8001
    assert ServingConfig.from_dict({**base, "port": 0, "grpc_port": 0}).grpc_port == 0  # both ephemeral
    for bad, message in (
        (8501, "grpc_port: must differ from port (8501)"),
        ("8001", "grpc_port: must be an integer"),
        (70000, "grpc_port: must be an integer in 1024..65535"),
    ):
        with pytest.raises(ValueError, match=re.escape(message)):
            ServingConfig.from_dict({**base, "grpc_port": bad})


def test_a_text_model_takes_bytes_raw_or_typed_with_the_http_rules() -> None:
    from v2_fixtures import FakeTextModel, grpc_in_process

    config = {"model_name": "texts", "artifact": "t.onnx", "inputs": [{"name": "text", "shape": [], "dtype": "string"}]}
    with grpc_in_process(config, FakeTextModel()) as target:
        client = grpcclient.InferenceServerClient(target)
        assert client.get_model_metadata("texts", as_json=True)["inputs"][0]["datatype"] == "BYTES"
        inputs = [grpcclient.InferInput("text", [2], "BYTES")]
        inputs[0].set_data_from_numpy(np.array(["héllo", "hi"], dtype=object))  # raw, length-prefixed UTF-8
        assert client.infer("texts", inputs).as_numpy("output_0").tolist() == [[5.0, 1.0], [2.0, 1.0]]

        channel = grpc.insecure_channel(target)
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        typed = pb.ModelInferRequest.InferInputTensor(
            name="text",
            datatype="BYTES",
            shape=[3, 1],
            contents=pb.InferTensorContents(bytes_contents=[b"a", b"bb", b"ccc"]),
        )
        answer = stub.ModelInfer(pb.ModelInferRequest(model_name="texts", inputs=[typed]))
        assert np.frombuffer(answer.raw_output_contents[0], "<f4").reshape(3, 2)[:, 0].tolist() == [1.0, 2.0, 3.0]
        for tensor, raw, message in (
            (
                pb.ModelInferRequest.InferInputTensor(name="text", datatype="FP32", shape=[1]),
                [b"\0" * 4],
                'input "text" takes text as BYTES, got "FP32"',
            ),
            (
                pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[2]),
                [b"\x01\0\0\0a"],
                "shape [2] needs 2 texts, got 1",
            ),
            (
                pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1]),
                [b"\x09\0\0\0a"],
                "BYTES element 0 says 9 bytes, but only 1 remain",
            ),
            (
                pb.ModelInferRequest.InferInputTensor(name="text", datatype="BYTES", shape=[1]),
                [b"\x01\0\0\0\xff"],
                "is not valid UTF-8",
            ),
        ):
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(pb.ModelInferRequest(model_name="texts", inputs=[tensor], raw_input_contents=raw))
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in info.value.details(), (
                info.value.details()
            )
        channel.close()


def test_calls_over_max_connections_are_refused_with_resource_exhausted() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from v2_fixtures import SlowModel, grpc_in_process

    config = {
        "model_name": MODEL,
        "artifact": "m.tflite",
        "max_connections": 2,
        "inputs": [{"name": "features", "shape": [4], "dtype": "float32"}],
    }
    with grpc_in_process(config, SlowModel(0.5), sample_cost_s=0.5) as target:

        def call(_: int) -> str:
            with grpc.insecure_channel(target) as channel:
                try:
                    pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(_infer_request(), timeout=10)
                    return "OK"
                except grpc.RpcError as exc:
                    return exc.code().name

        with ThreadPoolExecutor(6) as pool:
            codes = sorted(pool.map(call, range(6)))
    assert "OK" in codes and "RESOURCE_EXHAUSTED" in codes and set(codes) == {"OK", "RESOURCE_EXHAUSTED"}, codes


def test_calls_that_time_out_or_are_cancelled_hold_their_slot_until_answered_then_give_it_back() -> None:
    """A client that stops waiting (deadline, cancel) does not free its place under max_connections
    while the server still works on its call (the work is bounded, not just the waiting); once
    answered, the place is free again."""
    from v2_fixtures import SlowModel, grpc_in_process

    config = {
        "model_name": MODEL,
        "artifact": "m.tflite",
        "max_connections": 2,
        "inputs": [{"name": "features", "shape": [4], "dtype": "float32"}],
    }
    with grpc_in_process(config, SlowModel(0.3), sample_cost_s=0.3) as target, grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as info:
                stub.ModelInfer(_infer_request(), timeout=0.05)
            # The client's deadline, or the server's answer to it (tonic says CANCELLED "Timeout expired").
            assert info.value.code() in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(_infer_request(), timeout=5)
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # both places still at work
        time.sleep(1.0)
        futures = [stub.ModelInfer.future(_infer_request()) for _ in range(2)]
        for future in futures:
            future.cancel()
        time.sleep(1.0)  # the abandoned calls end; their answers find no one waiting
        answers = [stub.ModelInfer(_infer_request(), timeout=10) for _ in range(3)]
        assert all(len(a.raw_output_contents) == 1 for a in answers)


def test_cancelled_calls_are_summed_in_one_log_line_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client resetting its calls must not write the log at its own rate (hostile_bench's grpc-resets):
    a cancelled call is counted in the metrics and summed in a `grpc_cancelled` line, not logged alone."""
    from v2_fixtures import SlowModel, grpc_in_process

    import serving.grpc_service as service

    lines: list[tuple[Any, ...]] = []
    events: list[dict[str, Any]] = []
    monkeypatch.setattr(service, "write_request", lambda *line: lines.append(line))
    monkeypatch.setattr(service, "log_event", lambda **fields: events.append(fields))
    config = {
        "model_name": MODEL,
        "artifact": "m.tflite",
        "inputs": [{"name": "features", "shape": [4], "dtype": "float32"}],
    }
    with grpc_in_process(config, SlowModel(0.3), sample_cost_s=0.3) as target, grpc.insecure_channel(target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        futures = [stub.ModelInfer.future(_infer_request()) for _ in range(6)]
        time.sleep(0.1)
        for future in futures:
            future.cancel()
        time.sleep(2.0)  # the calls end unanswered; the summary follows within a second
        stub.ModelInfer(_infer_request(), timeout=10)
    assert [line[-1] for line in lines] == ["OK"]
    summaries = [e for e in events if e.get("event") == "grpc_cancelled"]
    # Calls reset before their message was whole never reach Python; the others are summed once.
    assert len(summaries) == 1 and 1 <= summaries[0]["calls"] <= 6
    assert summaries[0]["by_method"] == f"ModelInfer={summaries[0]['calls']}"


def test_unknown_methods_and_compressed_messages_get_a_status_not_a_hang(server: V2Server) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        unknown = channel.unary_unary("/inference.GRPCInferenceService/ModelExplain")
        with pytest.raises(grpc.RpcError) as info:
            unknown(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        other = channel.unary_unary("/other.Service/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            other(b"", timeout=5)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
        garbage = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as info:
            garbage(b"\xff\xff\xff", timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "does not parse" in info.value.details()
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ModelInfer(_infer_request(), timeout=5, compression=grpc.Compression.Gzip)
        assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED and "gzip" in info.value.details()
        assert len(stub.ModelInfer(_infer_request(), timeout=5).raw_output_contents) == 1  # still serving


# --- the transport's bounds -------------------------------------------------------------------------


def _serves_again(target: str, deadline_s: float = 10.0) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with grpc.insecure_channel(target) as channel:
            try:
                return (
                    len(
                        pb_grpc.GRPCInferenceServiceStub(channel)
                        .ModelInfer(_infer_request(), timeout=2)
                        .raw_output_contents
                    )
                    == 1
                )
            except grpc.RpcError:
                time.sleep(0.2)
    return False


def test_running_out_of_file_descriptors_pauses_accepting_and_is_logged_never_fatal(
    model_path: Path, tmp_path: Path
) -> None:
    import resource
    import socket

    server = V2Server(server_config(model_path), tmp_path)
    try:
        server.wait_for("ready")
        # Set on the running server (no preexec_fn: a fork from the threaded test process is unsafe).
        resource.prlimit(server.proc.pid, resource.RLIMIT_NOFILE, (160, 160))
        held = []
        for _ in range(300):  # more than the process may open
            try:
                held.append(socket.create_connection(("127.0.0.1", server.grpc_port), timeout=1))
            except OSError:
                break
        time.sleep(1.0)
        for sock in held:
            sock.close()
        assert _serves_again(server.grpc_url)
        errors = [r for r in server.records() if r.get("event") == "grpc_accept_error"]
        assert errors and "Too many open files" in errors[0]["error"], server.lines[-5:]
        assert len(errors) <= 3  # at most one line a second
    finally:
        assert server.stop() == 0


def test_connections_over_max_connections_are_closed_at_once(model_path: Path, tmp_path: Path) -> None:
    import socket

    server = V2Server(server_config(model_path, max_connections=3), tmp_path)
    try:
        server.wait_for("ready")
        socks = [socket.create_connection(("127.0.0.1", server.grpc_port), timeout=2) for _ in range(6)]
        closed = 0
        for sock in socks:
            try:
                closed += sock.recv(64) == b""  # the others get the server's HTTP/2 SETTINGS
            except (TimeoutError, ConnectionResetError):
                closed += 1
        assert closed >= 3
        for sock in socks:
            sock.close()
        assert _serves_again(server.grpc_url)
    finally:
        server.stop()


def test_messages_held_across_calls_are_capped_by_max_buffered_bytes() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from v2_fixtures import SlowModel, grpc_in_process

    config = {
        "model_name": MODEL,
        "artifact": "m.tflite",
        "max_body_bytes": 65536,
        "max_buffered_bytes": 131072,
        "inputs": [{"name": "features", "shape": [4], "dtype": "float32"}],
    }
    rows = np.zeros((3750, 4), dtype=np.float32)  # 60,000 bytes a message: two fit, a third does not
    tensor = pb.ModelInferRequest.InferInputTensor(name="features", datatype="FP32", shape=list(rows.shape))
    big = pb.ModelInferRequest(model_name=MODEL, inputs=[tensor], raw_input_contents=[rows.tobytes()])
    with grpc_in_process(config, SlowModel(0.4), sample_cost_s=0.4) as target:

        def call(_: int) -> str:
            with grpc.insecure_channel(target) as channel:
                try:
                    pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(big, timeout=20)
                    return "OK"
                except grpc.RpcError as exc:
                    assert "max_buffered_bytes" in exc.details(), exc.details()
                    return exc.code().name

        with ThreadPoolExecutor(6) as pool:
            codes = list(pool.map(call, range(6)))
        assert "OK" in codes and "RESOURCE_EXHAUSTED" in codes, codes
        assert _serves_again(target)


def test_sigterm_closes_the_listener_at_once_and_answers_the_calls_in_flight(model_path: Path, tmp_path: Path) -> None:
    import socket

    # The call waits 3 s in the batching window; SIGTERM comes 1.5 s after it was sent (slack for a
    # slow connect on a loaded machine: a call not yet in flight when the drain starts is refused).
    server = V2Server(server_config(model_path, max_batch_size=8, max_latency_ms=3000), tmp_path)
    try:
        server.wait_for("ready")
        answers: list[object] = []

        def one_call() -> None:
            with grpc.insecure_channel(server.grpc_url) as channel:
                stub = pb_grpc.GRPCInferenceServiceStub(channel)
                answers.append(len(stub.ModelInfer(_infer_request(), timeout=10).raw_output_contents) == 1)

        client = threading.Thread(target=one_call)
        client.start()
        time.sleep(1.5)  # the call waits in the batching window
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for("draining")
        time.sleep(0.2)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.grpc_port), timeout=2).close()
        client.join(timeout=10)
        assert answers == [True]
        assert server.proc.wait(timeout=15) == 0
        stopped = [r for r in server.records() if r.get("event") == "stopped"]
        assert stopped and stopped[0]["drained"] is True
    finally:
        server.stop()


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame (RFC 9113 §4.1), for clients that misbehave on purpose."""
    import struct

    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def _literal(name: str, value: str) -> bytes:
    """An HPACK literal header field without indexing, no Huffman coding (RFC 7541 §6.2.2)."""
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


def test_connections_without_a_handshake_or_a_call_are_closed_and_free_their_place(
    model_path: Path, tmp_path: Path
) -> None:
    import socket

    config = server_config(model_path, max_connections=3, request_timeout_s=1.0, idle_timeout_s=1.5)
    server = V2Server(config, tmp_path)
    try:
        server.wait_for("ready")
        silent = [socket.create_connection(("127.0.0.1", server.grpc_port), timeout=5) for _ in range(3)]
        started = time.monotonic()
        for sock in silent:  # never sends the HTTP/2 preface: closed after request_timeout_s
            while sock.recv(4096):  # the server's SETTINGS, then the end of the stream
                pass
        assert time.monotonic() - started < 4
        assert _serves_again(server.grpc_url)
        idle = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=5)
        idle.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(4, 0, 0))  # a handshake, then no call
        started = time.monotonic()
        while idle.recv(4096):  # SETTINGS, its ACK, GOAWAY, then the end of the stream
            pass
        assert 1.0 < time.monotonic() - started < 5
        idle.close()
        with grpc.insecure_channel(server.grpc_url) as channel:  # a connection whose calls ended
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
            # Idle past idle_timeout_s: closed (the channel goes IDLE; at most 3 s, as a plain sleep
            # waited); the channel reconnects by itself.
            closed = threading.Event()

            def watch(state: grpc.ChannelConnectivity) -> None:
                if state == grpc.ChannelConnectivity.IDLE:
                    closed.set()

            channel.subscribe(watch)
            closed.wait(3.0)
            channel.unsubscribe(watch)
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
    finally:
        server.stop()


def test_a_message_that_stalls_holds_no_place(model_path: Path, tmp_path: Path) -> None:
    """A call's place under max_connections is taken once its whole message is here (issue 19,
    finding 3): two stalled messages with max_connections 2 lock nobody out."""
    import socket
    import struct

    server = V2Server(server_config(model_path, max_connections=2, request_timeout_s=1.0), tmp_path)
    try:
        server.wait_for("ready")
        stalled = socket.create_connection(("127.0.0.1", server.grpc_port), timeout=5)
        headers = b"".join(
            _literal(k, v)
            for k, v in (
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/inference.GRPCInferenceService/ModelInfer"),
                (":authority", "127.0.0.1"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
            )
        )
        partial = b"\x00" + struct.pack(">I", 100) + b"\x0a" * 10  # 10 of the 100 bytes it announces
        stalled.sendall(
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
            + _frame(4, 0, 0)
            + _frame(1, 4, 1, headers)
            + _frame(0, 0, 1, partial)
            + _frame(1, 4, 3, headers)
            + _frame(0, 0, 3, partial)
        )
        time.sleep(0.3)
        with grpc.insecure_channel(server.grpc_url) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            assert len(stub.ModelInfer(_infer_request(), timeout=5).raw_output_contents) == 1
        stalled.close()
    finally:
        server.stop()

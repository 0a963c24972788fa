"""The serving-family seam: ``task`` picks the family, which brings its runtime and routes; the
lifecycle drives any family the same way (a test-only family served by the real server process)."""

from __future__ import annotations

import http.client
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_support import HERE, MODEL, ServerProcess, make_config, ready_server

from serving import families, family
from serving.config import ServingConfig

FAMILY_SERVER = [sys.executable, str(HERE / "family_server.py")]


def _echo_config(**overrides: Any) -> dict[str, Any]:
    return {"task": "echo", "model_name": MODEL, "artifact": "echo.model", "host": "127.0.0.1", "port": 0, **overrides}


@pytest.fixture
def echo_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(families.FAMILIES, "echo", "echo_family")


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from ready_server(_echo_config(), tmp_path_factory.mktemp("echo-server"), FAMILY_SERVER)


def _raw(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_predict_is_the_default_task(tmp_path: Path) -> None:
    config = ServingConfig.from_dict(make_config(tmp_path / "m.tflite"))
    assert config.task == "predict"
    names = [route.name for route in family.routes(config)]
    assert names[:3] == ["v1_status", "v1_metadata", "v1_predict"]
    assert names[-3:] == ["metrics", "healthz", "readyz"]


@pytest.mark.parametrize("task", ["sentence-embedding", "text-classification"])
def test_hugging_face_encoder_tasks_are_served_by_predict(tmp_path: Path, task: str) -> None:
    config = ServingConfig.from_dict(make_config(tmp_path / "m.onnx", task=task))
    assert family.routes(config) == family.routes(ServingConfig.from_dict(make_config(tmp_path / "m.onnx")))


def test_an_unknown_task_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as caught:
        ServingConfig.from_dict(make_config(tmp_path / "m.tflite", task="translate"))
    assert (
        "task: must be one of predict, sentence-embedding, text-classification, text-generation, "
        'speech-recognition, got "translate"'
    ) in str(caught.value)


def test_predict_needs_its_inputs_and_says_so_with_the_other_problems(tmp_path: Path) -> None:
    data = make_config(tmp_path / "m.tflite", port="80a")
    del data["inputs"]
    with pytest.raises(ValueError) as caught:
        ServingConfig.from_dict(data)
    message = str(caught.value)
    assert "inputs: required field is missing" in message and "port: must be an integer" in message


def test_inputs_are_the_predict_familys_requirement(tmp_path: Path, echo_registered: None) -> None:
    with pytest.raises(ValueError) as caught:
        ServingConfig.from_dict(make_config(tmp_path / "m.tflite", inputs=[]))
    assert "inputs: must list at least one input, got an empty list" in str(caught.value)
    assert ServingConfig.from_dict(_echo_config(inputs=[])).inputs == []  # render writes inputs for every model


def test_runtimes_are_each_familys_own(tmp_path: Path, echo_registered: None) -> None:
    with pytest.raises(ValueError) as caught:
        ServingConfig.from_dict(make_config(tmp_path / "m.tflite", runtime="llama.cpp"))
    assert 'runtime: must be one of auto, litert, onnx, got "llama.cpp"' in str(caught.value)
    assert ServingConfig.from_dict(_echo_config(runtime="llama.cpp")).runtime == "llama.cpp"  # the report's name


def test_a_family_without_its_module_fails_closed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(families.FAMILIES, "ghost", "serving.no_such_family")
    with pytest.raises(ValueError) as caught:
        ServingConfig.from_dict(_echo_config(task="ghost"))
    assert "task: 'ghost' is not available in this server (serving.no_such_family is missing)" in str(caught.value)


def test_a_family_without_grpc_serves_none_and_says_so(tmp_path: Path, echo_registered: None) -> None:
    """The spec gives every model a gRPC port by default: a family without a gRPC service starts
    anyway, with nothing on that port, and a warning in its log."""
    assert ServingConfig.from_dict(_echo_config(grpc_port=8001)).grpc_port == 8001  # not refused
    server = ServerProcess(_echo_config(grpc_port=0), tmp_path, FAMILY_SERVER)
    try:
        listening = server.wait_for("listening")
        assert listening["grpc_port"] is None
        warning = next(r for r in server.records() if r.get("event") == "warning")
        assert warning["problem"] == "grpc_port 0: task 'echo' has no gRPC service; nothing listens there"
        server.wait_for("ready")
        assert _raw(server.port, "POST", f"/echo/{MODEL}", b"ok") == (200, b"ko")
    finally:
        assert server.stop() == 0


def test_a_new_family_serves_its_routes_beside_the_common_ones(echo_server: ServerProcess) -> None:
    ready = next(r for r in echo_server.records() if r.get("event") == "ready")
    assert ready["task"] == "echo" and ready["echo_model"] == "echo.model"
    assert _raw(echo_server.port, "POST", f"/echo/{MODEL}", b"abc") == (200, b"cba")
    for path in ("/healthz", "/readyz"):
        assert echo_server.request("GET", path)[0] == 200, path
    status, metrics = _raw(echo_server.port, "GET", "/metrics")
    assert status == 200 and b'modelstack_requests_total{route="echo",status="200"} 1' in metrics
    status, _, doc = echo_server.request("GET", f"/v1/models/{MODEL}")  # predict's routes are not here
    assert (status, doc["error"]) == (404, 'no route "/v1/models/tiny"; try /echo/<name>, /metrics, /healthz, /readyz')
    status, _, doc = echo_server.request("POST", "/echo/other", b"x")
    assert status == 404 and 'model "other" is not served here' in doc["error"]


def test_the_lifecycle_starts_drains_and_closes_any_family(tmp_path: Path) -> None:
    server = ServerProcess(_echo_config(), tmp_path, FAMILY_SERVER)
    server.wait_for("ready")
    assert _raw(server.port, "POST", f"/echo/{MODEL}", b"xy") == (200, b"yx")
    # One SIGTERM, as Docker and the kubelet send it (stop() sends it): a second one sent while the
    # process exits, after its handlers are gone, kills it with -15 (seen once under load).
    assert server.stop() == 0
    events = [r["event"] for r in server.records()]
    order = [events.index(e) for e in ("echo_started", "ready", "echo_drained", "echo_closed", "stopped")]
    assert order == sorted(order), events
    assert next(r for r in server.records() if r["event"] == "echo_drained")["answered"] == 1

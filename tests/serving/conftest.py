"""Fixtures for the serving tests: tiny TFLite models (TensorFlow), servers on a real or a fake runtime."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_support import (
    FAKE_SERVER,
    ServerProcess,
    build_tflite_models,
    in_process_server,
    make_config,
    ready_server,
)


@pytest.fixture(scope="session")
def tflite_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 4 -> 8 -> 3 softmax Keras model as float32 and as full-integer int8 .tflite files."""
    return build_tflite_models(tmp_path_factory.mktemp("serving-models"))


@pytest.fixture(scope="module")
def float_server(tflite_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from ready_server(make_config(tflite_models["float32"]), tmp_path_factory.mktemp("float-server"))


@pytest.fixture(scope="module")
def int8_server(tflite_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    yield from ready_server(make_config(tflite_models["int8"]), tmp_path_factory.mktemp("int8-server"))


@pytest.fixture(scope="module")
def fake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The real server process on FakeRuntime: HTTP framing and protocol tests without TensorFlow."""
    yield from ready_server(make_config("fake.model"), tmp_path_factory.mktemp("fake-server"), FAKE_SERVER)


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture()
def ask_unloaded_server(tmp_path: Path) -> Any:
    """Send requests to an in-process server whose model never loads; (status, JSON) by path."""

    def ask(requests: list[tuple[str, str, bytes | None]]) -> dict[str, tuple[int, Any]]:
        with in_process_server(tmp_path) as port:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            results = {}
            for method, path, body in requests:
                conn.request(method, path, body=body)
                response = conn.getresponse()
                results[path] = (response.status, json.loads(response.read()))
            conn.close()
        return results

    return ask

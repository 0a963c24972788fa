"""The route table and both protocols over HTTP on FakeRuntime: dispatch, Allow, hints, docs, conformance."""

from __future__ import annotations

import http.client

import numpy as np
import pytest
from conformance import check_conformance
from serving_support import MODEL, REPO, SAMPLES, FakeRuntime, ServerProcess

from serving.predict import ROUTES as PREDICT_ROUTES
from serving.routes import COMMON_ROUTES, docs_table

ROUTES = (*PREDICT_ROUTES, *COMMON_ROUTES)


def _concrete(path: str) -> str:
    return path.replace("<name>", MODEL)


def _ask(port: int, method: str, path: str, body: bytes | None) -> tuple[int, dict[str, str]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        response.read()
        return response.status, dict(response.getheaders())
    finally:
        conn.close()


def test_docs_show_the_route_table() -> None:
    docs = (REPO / "docs" / "serving.md").read_text()
    assert docs_table(PREDICT_ROUTES) in docs, "docs/serving.md: paste the output of `python -m serving.predict`"


def test_fake_server_passes_conformance_and_predicts_like_the_runtime(fake_server: ServerProcess) -> None:
    meta = check_conformance(f"http://127.0.0.1:{fake_server.port}", MODEL, SAMPLES[0].tolist())
    assert meta["platform"] == "fake"
    status, _, doc = fake_server.request("POST", f"/v1/models/{MODEL}:predict", {"instances": SAMPLES.tolist()})
    assert status == 200
    np.testing.assert_array_equal(np.asarray(doc["predictions"], np.float32), FakeRuntime().predict(SAMPLES))


@pytest.mark.parametrize("route", ROUTES, ids=[r.name for r in ROUTES])
def test_every_route_answers_its_methods_and_405s_the_others(fake_server: ServerProcess, route) -> None:  # noqa: ANN001
    path = _concrete(route.path)
    body = (
        b'{"instances": [[0, 0, 0, 0]]}'
        if "predict" in path
        else b'{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [0, 0, 0, 0]}]}'
    )
    port = fake_server.port
    for method in route.methods:
        status, _ = _ask(port, method, path, body if method == "POST" else None)
        assert status == 200, (method, path, status)
    other = "PUT" if route.methods[0] == "POST" else "POST"
    status, headers = _ask(port, other, path, b"{}")
    assert status == 405 and headers["Allow"] == ", ".join(route.methods)
    if "<name>" in route.path:
        versioned = route.path.replace("<name>", f"{MODEL}/versions/1")
        method = route.methods[0]
        assert _ask(port, method, versioned, body if method == "POST" else None)[0] == 200


def test_unknown_path_hint_names_every_route(fake_server: ServerProcess) -> None:
    status, _, doc = fake_server.request("GET", "/nowhere")
    assert status == 404
    for route in ROUTES:
        assert route.path in doc["error"]

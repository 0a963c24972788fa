"""The model server: config validation, decoding, the runtime, and the real HTTP server process.

Server tests start the server as a subprocess with a temp config (port 0; the bound port is read
from the "listening" log line) and talk HTTP to it, the way the serving image runs it. HTTP and
protocol behaviour runs against ``fake_server`` (FakeRuntime, no TensorFlow); tests marked ``tf``
use tiny Keras models converted to .tflite: one float32, one full-integer int8.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from serving_support import (
    FAKE_SERVER,
    METADATA,
    MODEL,
    SAMPLES,
    ServerProcess,
    in_process_server,
    make_config,
    predict_bytes,
    read_response,
    rss_kib,
    server_env,
)

from serving import tensors
from serving.config import InputSpec, ServingConfig
from serving.errors import ClientError
from serving.tensors import has_wide_integer
from serving.v1 import decode_predict_request


def _direct_predict(artifact: Path, batch: np.ndarray) -> np.ndarray:
    from serving.runtime import LiteRTModel

    return LiteRTModel(artifact, num_threads=1).predict(batch)


# --- config ----------------------------------------------------------------------------------------


def test_config_loads_with_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "serving.json"
    path.write_text(
        json.dumps(
            {
                "model_name": "digits",
                "artifact": "/app/model.tflite",
                "inputs": [{"name": "pixels", "shape": [64], "dtype": "float32"}],
            }
        )
    )
    monkeypatch.setenv("MODELSTACK_SERVING_CONFIG", str(path))
    config = ServingConfig.load()
    assert config.input == InputSpec(name="pixels", shape=(64,), dtype="float32")
    assert (config.host, config.port, config.threads) == ("0.0.0.0", 8501, 1)
    assert config.max_body_bytes == 4 * 1024 * 1024 and config.metadata == {}


def test_config_reports_every_problem_at_once() -> None:
    with pytest.raises(ValueError) as caught:
        ServingConfig.from_dict(
            {
                "model_name": "a/b",
                "port": True,
                "threads": 0,
                "extra": 1,
                "metadata": [],
                "inputs": [{"name": "x", "shape": [0], "dtype": "int4", "size": 3}],
            }
        )
    message = str(caught.value)
    for expected in (
        'model_name: "a/b" is not a valid name',
        "port: must be an integer in 1024..65535 (or 0: any free port), got true",
        "threads: must be an integer in 1..64",
        "extra: unknown field",
        "artifact: required field is missing",
        "metadata: must be a JSON object",
        "inputs[0].shape: must be a list of positive integers",
        'inputs[0].dtype: "int4" is not supported',
        "inputs[0].size: unknown field",
    ):
        assert expected in message, message


def test_config_rejects_repeated_input_names_and_unreadable_files(tmp_path: Path) -> None:
    spec = {"name": "x", "shape": [1], "dtype": "float32"}
    with pytest.raises(ValueError, match='"x" is given more than once'):
        ServingConfig.from_dict({"model_name": "m", "artifact": "a", "inputs": [spec, spec]})
    with pytest.raises(ValueError, match="at least one input"):
        ServingConfig.from_dict({"model_name": "m", "artifact": "a", "inputs": []})
    with pytest.raises(ValueError, match="cannot read file"):
        ServingConfig.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        ServingConfig.load(tmp_path / "bad.json")


# --- request decoding (pure) --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "spec_dtype", "message"),
    [
        (b'{"instances": [[1, true, 2, 3]]}', "float32", "instances[0][1]: expected a number"),
        (b'{"instances": [[1e999, 0, 0, 0]]}', "float32", "non-finite"),
        (b'{"instances": [[1e39, 0, 0, 0]]}', "float32", "outside the float32 range"),
        (b'{"instances": [[99999999999999999999999, 0, 0, 0]]}', "float32", "out of range"),
        (b'{"instances": [[' + b"9" * 5000 + b", 0, 0, 0]]}", "float32", "malformed JSON: Exceeds the limit"),
        (b'{"instances": [[1.5, 0, 0, 0]]}', "int8", "takes integers"),
        (b'{"instances": [[300, 0, 0, 0]]}', "int8", "int8 values in -128..127"),
    ],
)
def test_decode_rejects_values_that_do_not_fit(body: bytes, spec_dtype: str, message: str) -> None:
    with pytest.raises(ClientError) as caught:
        decode_predict_request(body, InputSpec("features", (4,), spec_dtype))
    assert caught.value.status == 400 and message in caught.value.message


def test_decode_accepts_integral_values_for_integer_inputs() -> None:
    batch, row_format = decode_predict_request(
        b'{"inputs": {"pixels": [[1, 2.0], [-3, 4]]}}', InputSpec("pixels", (2,), "int8")
    )
    assert not row_format and batch.dtype == np.int8 and batch.tolist() == [[1, 2], [-3, 4]]


def test_integers_beyond_64_bits_are_refused_not_rounded() -> None:
    # orjson would read both as floats: -2**63 - 1 would then pass as -2**63.
    for literal in (b"-9223372036854775809", b"18446744073709551616"):
        with pytest.raises(ClientError) as caught:
            decode_predict_request(b'{"instances": [[' + literal + b", 0]]}", InputSpec("f", (2,), "int64"))
        assert f"integer {literal.decode()} is out of range for int64" in caught.value.message


@pytest.mark.parametrize(
    ("text", "wide"),
    [
        ("[0.00019000160682480782, 1]", False),  # 20 digits after the point: a fraction
        ("[1.2345678901234567890123e-5]", False),
        ("[123456789012345678901.5]", False),  # a float however long its integer part
        ("[12345678901234567890e3]", False),
        ("[18446744073709551615, -9223372036854775808]", False),  # the ends of the 64-bit ranges
        ("[-1234567890123456789, 9999999999999999999]", False),
        ("[18446744073709551616]", True),
        ("[1, -9223372036854775809]", True),
        ('{"a": 123456789012345678901}', True),
        ("123456789012345678901", True),
    ],
)
def test_only_whole_integer_literals_count_as_wide(text: str, wide: bool) -> None:
    assert has_wide_integer(text.encode()) is wide


def test_float32_bodies_with_long_fractions_take_the_fast_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    # json.dumps writes float32 values with 17 significant digits: 0.000190001606... has 20 digits in a
    # row. Such a body used to go to the standard library's parser, 4-6x slower on a 3,072-value tensor.
    values = np.random.default_rng(0).uniform(0, 0.002, size=3072).astype(np.float32)
    body = json.dumps({"instances": [values.tolist()]}).encode()
    assert b"0.000" in body

    def refuse(text: str) -> None:
        raise AssertionError("the standard library parser ran")

    monkeypatch.setattr(tensors._json_decoder, "decode", refuse)
    batch, _ = decode_predict_request(body, InputSpec("x", (3072,), "float32"))
    np.testing.assert_array_equal(batch[0], values)


def test_not_ready_server_answers_503_but_is_healthy(ask_unloaded_server) -> None:  # noqa: ANN001
    results = ask_unloaded_server(
        [
            ("GET", "/healthz", None),
            ("GET", "/readyz", None),
            ("GET", f"/v1/models/{MODEL}", None),
            ("GET", f"/v1/models/{MODEL}/metadata", None),
            ("POST", f"/v1/models/{MODEL}:predict", b'{"instances": [[0, 0, 0, 0]]}'),
        ]
    )
    assert results["/healthz"][0] == 200 and results["/readyz"][0] == 503
    assert results[f"/v1/models/{MODEL}"][1]["model_version_status"][0]["state"] == "LOADING"
    assert results[f"/v1/models/{MODEL}/metadata"][0] == 503
    assert results[f"/v1/models/{MODEL}:predict"][0] == 503
    assert "still loading" in results[f"/v1/models/{MODEL}:predict"][1]["error"]


# --- runtime ------------------------------------------------------------------------------------------


@pytest.mark.tf
def test_runtime_quantizes_int8_io_and_matches_float(tflite_models: dict[str, Path]) -> None:
    from serving.runtime import LiteRTModel

    float_model = LiteRTModel(tflite_models["float32"], num_threads=2)
    int8_model = LiteRTModel(tflite_models["int8"], num_threads=2)
    (feed,) = int8_model.feeds
    assert feed.dtype == np.int8 and feed.quantized and feed.shape == (4,)
    assert int8_model.output_dtype == np.float32
    assert int8_model.warm_up().shape == (1, 3)
    expected = float_model.predict(SAMPLES)
    got = int8_model.predict(SAMPLES)
    assert got.dtype == np.float32 and got.shape == (5, 3)
    np.testing.assert_allclose(got, expected, atol=0.05)  # int8 keeps the float model's answers
    # Batch sizes change between calls (resize) and threads share the interpreter safely.
    results: list[np.ndarray] = []
    threads = [
        threading.Thread(target=lambda n=n: results.append(int8_model.predict(SAMPLES[:n])))
        for n in (1, 5, 2, 5, 1, 3) * 5
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for result in results:
        np.testing.assert_array_equal(result, got[: len(result)])


# --- the HTTP server -----------------------------------------------------------------------------------


@pytest.mark.tf
def test_status_health_and_metadata(float_server: ServerProcess) -> None:
    assert float_server.request("GET", "/healthz")[::2] == (200, {"status": "ok"})
    assert float_server.request("GET", "/readyz")[::2] == (200, {"status": "ready"})
    expected_status = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert float_server.request("GET", f"/v1/models/{MODEL}")[::2] == (200, expected_status)
    assert float_server.request("GET", f"/v1/models/{MODEL}/versions/1")[::2] == (200, expected_status)

    status, _, metadata = float_server.request("GET", f"/v1/models/{MODEL}/metadata")
    assert status == 200 and metadata["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    assert metadata["metadata"]["modelstack"] == METADATA
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    features = signature["inputs"]["features"]
    assert features["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in features["tensor_shape"]["dim"]] == ["-1", "4"]
    assert [d["size"] for d in signature["outputs"]["output_0"]["tensor_shape"]["dim"]] == ["-1", "3"]


@pytest.mark.tf
@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_predict_row_and_columnar_equal_direct_runtime(
    variant: str, request: pytest.FixtureRequest, tflite_models: dict[str, Path]
) -> None:
    server: ServerProcess = request.getfixturevalue("float_server" if variant == "float32" else "int8_server")
    expected = _direct_predict(tflite_models[variant], SAMPLES)
    rows = SAMPLES.tolist()  # float32 -> Python float is exact, so the server sees the same numbers
    path = f"/v1/models/{MODEL}:predict"
    for body, key in [
        ({"instances": rows}, "predictions"),
        ({"instances": [{"features": row} for row in rows]}, "predictions"),
        ({"inputs": rows}, "outputs"),
        ({"inputs": {"features": rows}, "signature_name": "serving_default"}, "outputs"),
    ]:
        status, _, result = server.request("POST", path, body)
        assert status == 200, result
        assert list(result) == [key]
        np.testing.assert_array_equal(np.asarray(result[key], dtype=np.float32), expected)
    status, _, single = server.request("POST", f"/v1/models/{MODEL}/versions/1:predict", {"instances": rows[:1]})
    assert status == 200 and np.argmax(single["predictions"][0]) == np.argmax(expected[0])


BAD_REQUESTS: list[tuple[str, str, str, bytes | None, dict[str, str], int, str]] = [
    # (id, method, path, body, headers, status, substring of the error)
    ("malformed-json", "POST", ":predict", b'{"instances": [[1, 2', {}, 400, "malformed JSON"),
    ("not-utf8", "POST", ":predict", b'{"instances": "\xff"}', {}, 400, "not UTF-8"),
    ("nan", "POST", ":predict", b'{"instances": [[NaN, 0, 0, 0]]}', {}, 400, "NaN is not allowed"),
    ("infinity", "POST", ":predict", b'{"instances": [[-Infinity, 0, 0, 0]]}', {}, 400, "-Infinity is not allowed"),
    ("overflow", "POST", ":predict", b'{"instances": [[1e999, 0, 0, 0]]}', {}, 400, "non-finite"),
    ("deep-nesting", "POST", ":predict", b"[" * 1500 + b"]" * 1500, {}, 400, "malformed JSON"),
    ("not-an-object", "POST", ":predict", b"[[1, 2, 3, 4]]", {}, 400, 'with "instances" or "inputs"'),
    ("missing-field", "POST", ":predict", b'{"signature_name": "serving_default"}', {}, 400, 'missing "instances"'),
    ("both-fields", "POST", ":predict", b'{"instances": [[0,0,0,0]], "inputs": [[0,0,0,0]]}', {}, 400, "not both"),
    ("extra-field", "POST", ":predict", b'{"instances": [[0,0,0,0]], "foo": 1}', {}, 400, 'unexpected field(s) "foo"'),
    (
        "bad-signature",
        "POST",
        ":predict",
        b'{"instances": [[0,0,0,0]], "signature_name": "x"}',
        {},
        400,
        "signature_name",
    ),
    ("empty-batch", "POST", ":predict", b'{"instances": []}', {}, 400, "non-empty array"),
    (
        "wrong-shape",
        "POST",
        ":predict",
        b'{"instances": [[1, 2, 3]]}',
        {},
        400,
        'instances[0]: expected 4 values (input "features"',
    ),
    ("ragged", "POST", ":predict", b'{"inputs": [[1, 2, 3, 4], [1, 2]]}', {}, 400, "inputs[1]: expected 4 values"),
    (
        "too-deep",
        "POST",
        ":predict",
        b'{"instances": [[[1], [2], [3], [4]]]}',
        {},
        400,
        "instances[0][0]: expected a number",
    ),
    ("scalar-batch", "POST", ":predict", b'{"inputs": 3}', {}, 400, "inputs: expected an array"),
    (
        "string",
        "POST",
        ":predict",
        b'{"instances": [[1, "2", 3, 4]]}',
        {},
        400,
        'instances[0][1]: expected a number for input "features", got "2"',
    ),
    ("boolean", "POST", ":predict", b'{"instances": [[true, false, true, false]]}', {}, 400, "got true"),
    ("null", "POST", ":predict", b'{"instances": [[1, null, 3, 4]]}', {}, 400, "got null"),
    ("wrong-name", "POST", ":predict", b'{"instances": [{"pixels": [0,0,0,0]}]}', {}, 400, 'single key "features"'),
    ("wrong-column", "POST", ":predict", b'{"inputs": {"pixels": [[0,0,0,0]]}}', {}, 400, 'single key "features"'),
    ("bad-length", "POST", ":predict", b"{}", {"Content-Length": "abc"}, 400, "Invalid character in Content-Length"),
    ("too-large", "POST", ":predict", b"{}", {"Content-Length": "5000"}, 413, "limit is 4096"),
    ("unknown-model", "GET", "/v1/models/other", None, {}, 404, 'model "other" is not served here'),
    ("unknown-version", "GET", "/versions/2", None, {}, 404, "no version"),
    ("unknown-route", "GET", "/v2/anything", None, {}, 404, "no route"),
    ("unknown-verb", "POST", ":classify", b"{}", {}, 404, "no route"),
    ("get-predict", "GET", ":predict", None, {}, 405, "use POST"),
    ("post-health", "POST", "/healthz", b"{}", {}, 405, "use GET or HEAD"),
    ("put-status", "PUT", "/status", b"{}", {}, 405, "PUT is not allowed"),
    ("delete-metadata", "DELETE", "/metadata", None, {}, 405, "not allowed"),
]


def _model_path(path: str) -> str:
    if path.startswith(":"):
        return f"/v1/models/{MODEL}{path}"
    if path in ("/status", "/metadata", "/versions/2"):
        return f"/v1/models/{MODEL}{path}".replace("/status", "")
    return path


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "message"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_gets_json_error(
    fake_server: ServerProcess,
    method: str,
    path: str,
    body: bytes | None,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    if "Content-Length" in headers:  # http.client would send its own
        length = headers["Content-Length"]
        head = f"{method} {_model_path(path)} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n"
        got, response_headers, payload = fake_server.raw(head.encode())
    else:
        got, response, payload = fake_server.request(method, _model_path(path), body, headers)
        response_headers = dict(response.getheaders())
    assert got == status, payload
    assert message in payload["error"], payload
    assert response_headers["Content-Type"] == "application/json"
    if status == 405:
        assert response_headers["Allow"] in ("POST", "GET, HEAD")
    if status == 413:
        assert response_headers["Connection"] == "close"
    assert fake_server.proc.poll() is None


@pytest.mark.parametrize(
    ("raw", "status", "message"),
    [
        (b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\n\r\n", 411, "Content-Length header (or chunked"),
        (
            b"POST /v1/models/tiny:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            400,
            "Duplicate Content-Length",
        ),
        (b"GARBAGE\r\n\r\n", 400, "malformed request line"),
        (b"GET /healthz HTTP/2.0\r\n\r\n", 505, "not supported"),
        (b"GET /healthz HTTP/1.1\r\nBad Header: 1\r\n\r\n", 400, "Invalid header token"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400, "Unexpected whitespace"),
        (b"BREW /healthz HTTP/1.1\r\n\r\n", 400, "unknown method"),
        (b"PROPFIND /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 501, "Unsupported method"),
    ],
    ids=[
        "no-length",
        "conflicting-lengths",
        "bad-request-line",
        "http2",
        "space-in-name",
        "obs-fold",
        "unknown-method",
        "unsupported-method",
    ],
)
def test_malformed_http_gets_json_error(fake_server: ServerProcess, raw: bytes, status: int, message: str) -> None:
    got, headers, payload = fake_server.raw(raw)
    assert (got, headers["Connection"]) == (status, "close")
    assert message in payload["error"], payload
    assert fake_server.proc.poll() is None


def test_keep_alive_survives_client_errors_and_the_server_stays_up(fake_server: ServerProcess) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", fake_server.port, timeout=10)
    path = f"/v1/models/{MODEL}:predict"
    conn.request("POST", path, body=b'{"instances": [[0, 0, 0, 0]]}')
    assert conn.getresponse().read() and conn.sock is not None
    first_socket = conn.sock
    conn.request("POST", path, body=b'{"instances": [[0, 0]]}')
    response = conn.getresponse()
    assert response.status == 400 and response.getheader("Connection") is None
    response.read()
    conn.request("HEAD", "/healthz")
    response = conn.getresponse()
    assert (response.status, response.read(), response.getheader("Content-Length")) == (200, b"", "15")
    conn.request("POST", path, body=b'{"instances": [[1, 2, 3, 4]]}')
    response = conn.getresponse()
    assert response.status == 200 and len(json.loads(response.read())["predictions"][0]) == 3
    assert conn.sock is first_socket  # four requests, one connection
    conn.close()
    assert fake_server.request("GET", "/healthz")[0] == 200 and fake_server.proc.poll() is None


def test_pipelined_and_dribbled_requests_are_answered_in_order(fake_server: ServerProcess) -> None:
    requests = [predict_bytes([i, 0, 0, 0]) for i in range(5)] + [b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"]
    expected = [
        fake_server.request("POST", f"/v1/models/{MODEL}:predict", json.dumps({"instances": [[i, 0, 0, 0]]}).encode())[
            2
        ]
        for i in range(5)
    ]
    with socket.create_connection(("127.0.0.1", fake_server.port), timeout=10) as sock:
        answers = sock.makefile("rb")  # one reader: several answers may arrive in one segment
        sock.sendall(b"".join(requests))  # pipelined: six requests in one write
        for i in range(6):
            status, doc = read_response(answers)
            assert status == 200 and doc == (expected[i] if i < 5 else {"status": "ok"})
        for byte in predict_bytes([9, 9, 9, 9]):  # one byte per write: the parser waits for the rest
            sock.sendall(bytes([byte]))
        status, doc = read_response(answers)
        assert status == 200 and len(doc["predictions"][0]) == 3


def test_client_leaving_mid_request_is_counted_and_harmless(fake_server: ServerProcess) -> None:
    head = f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", fake_server.port), timeout=10) as sock:
            sock.sendall(head.encode() + b'{"instances"')  # then hang up before the rest of the body
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{fake_server.port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        if 'modelstack_requests_total{route="other",status="499"} 3' in metrics:
            break
        time.sleep(0.05)
    assert 'status="499"} 3' in metrics
    assert fake_server.request("GET", "/healthz")[0] == 200 and fake_server.proc.poll() is None


def test_half_closed_client_gets_every_answer(tmp_path: Path) -> None:
    server = ServerProcess(make_config("fake.model", max_batch_size=8, max_latency_ms=50), tmp_path, FAKE_SERVER)
    try:
        server.wait_for("ready")
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            answers = sock.makefile("rb")
            sock.sendall(b"".join(predict_bytes([i, 1, 2, 3]) for i in range(5)))
            sock.shutdown(socket.SHUT_WR)  # "that is all": the answers must still come
            statuses = [read_response(answers)[0] for _ in range(5)]
            assert statuses == [200] * 5 and answers.read() == b""  # then the server closes
    finally:
        assert server.stop() == 0


def test_client_that_never_reads_cannot_grow_the_server(fake_server: ServerProcess) -> None:
    request = b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"  # small request, large answer
    rss_before = rss_kib(fake_server.proc.pid)
    with socket.create_connection(("127.0.0.1", fake_server.port), timeout=10) as sock:
        sock.setblocking(False)
        sent, deadline = 0, time.monotonic() + 2.5
        while time.monotonic() < deadline and sent < 20_000_000:
            try:
                sent += sock.send(request * 1000)
            except BlockingIOError:  # the server stopped reading: TCP pushes back
                time.sleep(0.05)
        assert sent < 20_000_000, "the server kept reading from a client that reads nothing"
    grown_mib = (rss_kib(fake_server.proc.pid) - rss_before) / 1024
    assert grown_mib < 30, f"server memory grew by {grown_mib:.0f} MiB"
    assert fake_server.request("GET", "/healthz")[0] == 200


def test_request_not_complete_in_time_gets_408(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with in_process_server(tmp_path, request_timeout_s=0.5) as port:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
            status, doc = read_response(sock.makefile("rb"))
    assert status == 408 and "not complete within 0.5 s" in doc["error"]


def test_access_log_has_one_json_line_per_request(fake_server: ServerProcess) -> None:
    fake_server.request("GET", "/readyz?probe=1")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [r for r in fake_server.records() if r.get("event") == "request" and r["path"] == "/readyz?probe=1"]
        if lines:
            break
        time.sleep(0.02)
    assert lines and lines[0]["method"] == "GET" and lines[0]["status"] == 200
    assert isinstance(lines[0]["duration_ms"], float) and lines[0]["duration_ms"] >= 0


def test_sigterm_finishes_in_flight_request_and_exits_0(tmp_path: Path) -> None:
    server = ServerProcess(make_config("fake.model"), tmp_path, FAKE_SERVER)
    server.wait_for("ready")
    idle = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    idle.request("GET", "/healthz")
    idle.getresponse().read()  # now an idle keep-alive connection the server must close

    body = b'{"instances": [[1, 2, 3, 4]]}'
    in_flight = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    in_flight.sendall(
        f"POST /v1/models/{MODEL}:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body[:10]
    )
    time.sleep(0.3)  # the server has read the headers and waits for the rest of the body
    server.proc.send_signal(signal.SIGTERM)
    server.wait_for("draining")
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", server.port), timeout=2)
    assert server.proc.poll() is None  # still waiting for the in-flight request

    in_flight.sendall(body[10:])
    response = http.client.HTTPResponse(in_flight)
    response.begin()
    assert response.status == 200 and response.getheader("Connection") == "close"
    assert len(json.loads(response.read())["predictions"]) == 1
    in_flight.close()
    assert server.proc.wait(timeout=10) == 0
    assert server.wait_for("stopped")["drained"] is True
    assert idle.sock is not None and idle.sock.recv(1) == b""  # the idle connection was closed
    idle.close()


def test_sigterm_during_a_slow_load_exits_at_once(tmp_path: Path) -> None:
    server = ServerProcess(make_config("fake.model"), tmp_path, FAKE_SERVER, env={"FAKE_LOAD_DELAY_S": "30"})
    server.wait_for("listening")
    assert server.request("GET", "/readyz")[0] == 503
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0 and time.monotonic() - started < 5  # Docker kills at 10 s
    assert server.wait_for("stopped")["drained"] is True


def test_bad_config_exits_2_and_missing_artifact_exits_1(tmp_path: Path) -> None:
    bad = ServerProcess({"model_name": MODEL, "port": "x"}, tmp_path)
    assert bad.proc.wait(timeout=20) == 2
    error = bad.wait_for("config_error")["error"]
    assert "port: must be an integer" in error and "artifact: required field is missing" in error

    missing = ServerProcess(make_config(tmp_path / "nope.tflite"), tmp_path)
    assert missing.proc.wait(timeout=20) == 1
    assert "does not exist" in missing.wait_for("load_failed")["error"]


def test_a_log_reader_that_stops_reading_never_stalls_the_server(tmp_path: Path) -> None:
    # stderr is a pipe nobody reads: it fills after a few hundred lines, and the server goes on.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = tmp_path / "serving.json"
    config.write_text(json.dumps(make_config("fake.model", port=port)))
    env = {**server_env(), "MODELSTACK_SERVING_CONFIG": str(config)}
    proc = subprocess.Popen(FAKE_SERVER, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        started = time.monotonic()
        for _ in range(2000):  # about 300 KB of access-log lines, several times a pipe's capacity
            conn.request("GET", "/healthz?" + "x" * 64)
            response = conn.getresponse()
            assert response.status == 200
            response.read()
        conn.close()
        assert time.monotonic() - started < 15
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.stderr is not None
        proc.stderr.read()  # let it write the rest and exit
        assert proc.wait(timeout=15) == 0

"""Protocol conformance checks against any running modelstack server (stdlib only).

    from tests.conformance import check_conformance   # or: sys.path has tests/
    check_conformance("http://127.0.0.1:8501", "digits", sample=[0.0] * 64)

or from a shell::

    python tests/conformance.py http://127.0.0.1:8501 digits --zeros 64 [--api-key KEY]

``sample`` is one input sample (nested lists without the batch dimension). Checks both APIs
(TF Serving REST, Open Inference Protocol V2), the health routes, /metrics, and that client
errors are 4xx with a JSON ``error`` and leave the server serving. With ``api_key`` the key is
sent on every request and a request without it must get 401. Raises AssertionError naming the
first failed check; returns the parsed V2 metadata on success.
"""

from __future__ import annotations

import http.client
import json
import math
import sys
from typing import Any
from urllib.parse import urlsplit


class _Client:
    def __init__(self, base_url: str, api_key: str | None, timeout: float) -> None:
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"base_url must be http://host[:port], got {base_url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(
        self, method: str, path: str, body: Any = None, auth: bool = True, raw: bytes | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            headers = {"Content-Type": "application/json"}
            if auth and self.api_key:
                headers["Authorization"] = f"Bearer {self.api_key}"
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            conn.request(method, self.prefix + path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, payload
        finally:
            conn.close()

    def json(self, method: str, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        status, headers, payload = self.request(method, path, body, **kwargs)
        where = f"{method} {path}"
        assert headers.get("content-type", "").startswith("application/json"), (
            f"{where}: Content-Type {headers.get('content-type')!r}, expected application/json"
        )
        try:
            return status, json.loads(payload)
        except ValueError:
            raise AssertionError(f"{where}: body is not JSON: {payload[:200]!r}") from None


def _shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = value[0] if value else None
    return shape


def _flat(value: Any) -> list[float]:
    if isinstance(value, list):
        return [x for item in value for x in _flat(item)]
    return [value]


def _close(a: list[float], b: list[float], where: str) -> None:
    assert len(a) == len(b), f"{where}: {len(a)} values vs {len(b)}"
    for x, y in zip(a, b):
        assert math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-5), f"{where}: {x} != {y}"


def check_conformance(
    base_url: str, model_name: str, sample: Any, api_key: str | None = None, timeout: float = 10.0
) -> dict[str, Any]:
    """Run every check against ``base_url``; raise AssertionError on the first failure."""
    c = _Client(base_url, api_key, timeout)
    sample_shape = _shape(sample)

    # Health routes (never behind the API key).
    for path, expected in (
        ("/healthz", {"status": "ok"}),
        ("/readyz", {"status": "ready"}),
        ("/v2/health/live", {"live": True}),
        ("/v2/health/ready", {"ready": True}),
    ):
        status, doc = c.json("GET", path, auth=False)
        assert (status, doc) == (200, expected), f"GET {path}: {status} {doc}"

    if api_key:
        for method, path, body in (
            ("GET", f"/v1/models/{model_name}", None),
            ("GET", f"/v2/models/{model_name}", None),
            ("POST", f"/v2/models/{model_name}/infer", {"inputs": []}),
            ("POST", f"/v1/models/{model_name}:predict", {"instances": [sample]}),
        ):
            status, doc = c.json(method, path, body, auth=False)
            assert status == 401 and "error" in doc, f"{method} {path} without the key: {status} {doc}"

    # TF Serving REST.
    status, doc = c.json("GET", f"/v1/models/{model_name}")
    assert status == 200, f"GET /v1/models/{model_name}: {status} {doc}"
    versions = doc["model_version_status"]
    assert versions[0]["state"] == "AVAILABLE" and versions[0]["version"] == "1", doc
    status, doc = c.json("GET", f"/v1/models/{model_name}/metadata")
    assert status == 200, f"metadata: {status} {doc}"
    assert doc["model_spec"]["name"] == model_name, doc
    signature = doc["metadata"]["signature_def"]["signature_def"]["serving_default"]
    ((input_name, input_info),) = signature["inputs"].items()
    dims = [int(d["size"]) for d in input_info["tensor_shape"]["dim"]]
    assert dims == [-1, *sample_shape], f"metadata input shape {dims}, sample shape {sample_shape}"

    status, rows = c.json("POST", f"/v1/models/{model_name}:predict", {"instances": [sample, sample]})
    assert status == 200 and len(rows["predictions"]) == 2, f"predict instances: {status} {rows}"
    status, named = c.json("POST", f"/v1/models/{model_name}:predict", {"instances": [{input_name: sample}]})
    assert status == 200 and len(named["predictions"]) == 1, f"predict named instances: {status} {named}"
    status, columns = c.json("POST", f"/v1/models/{model_name}:predict", {"inputs": {input_name: [sample]}})
    assert status == 200 and len(columns["outputs"]) == 1, f"predict inputs: {status} {columns}"
    _close(_flat(rows["predictions"][0]), _flat(columns["outputs"][0]), "instances vs inputs")
    _close(_flat(rows["predictions"][0]), _flat(named["predictions"][0]), "instances vs named")

    # Open Inference Protocol V2.
    status, doc = c.json("GET", "/v2")
    assert status == 200 and {"name", "version", "extensions"} <= doc.keys(), f"GET /v2: {doc}"
    status, meta = c.json("GET", f"/v2/models/{model_name}")
    assert status == 200, f"GET /v2/models/{model_name}: {status} {meta}"
    assert meta["name"] == model_name and "1" in meta["versions"] and meta["platform"], meta
    (v2_input,) = meta["inputs"]
    (v2_output,) = meta["outputs"]
    assert v2_input["name"] == input_name and v2_input["shape"] == [-1, *sample_shape], meta
    assert {"name", "datatype", "shape"} <= v2_output.keys(), meta
    status, doc = c.json("GET", f"/v2/models/{model_name}/ready")
    assert (status, doc.get("ready")) == (200, True), f"model ready: {status} {doc}"
    status, doc = c.json("GET", f"/v2/models/{model_name}/versions/1/ready")
    assert status == 200, f"versions/1/ready: {status} {doc}"

    flat = _flat(sample)
    request = {
        "id": "conformance-1",
        "inputs": [
            {"name": input_name, "shape": [2, *sample_shape], "datatype": v2_input["datatype"], "data": flat + flat}
        ],
        "outputs": [{"name": v2_output["name"]}],
    }
    status, doc = c.json("POST", f"/v2/models/{model_name}/infer", request)
    assert status == 200, f"infer: {status} {doc}"
    assert doc["model_name"] == model_name and doc["id"] == "conformance-1", doc
    (out,) = doc["outputs"]
    assert out["name"] == v2_output["name"] and out["datatype"] == v2_output["datatype"], out
    assert out["shape"][0] == 2 and len(out["data"]) == math.prod(out["shape"]), out
    half = len(out["data"]) // 2
    _close(out["data"][:half], _flat(rows["predictions"][0]), "V2 vs TF Serving outputs")
    nested = {"inputs": [{**request["inputs"][0], "shape": [1, *sample_shape], "data": [sample]}]}
    status, doc = c.json("POST", f"/v2/models/{model_name}/versions/1/infer", nested)
    assert status == 200 and doc["outputs"][0]["shape"][0] == 1 and "id" not in doc, f"nested: {doc}"

    # Client errors: 4xx, JSON error, server still serving.
    bad = [
        ("POST", f"/v1/models/{model_name}:predict", b"{not json", 400),
        ("POST", f"/v1/models/{model_name}:predict", json.dumps({"instances": [[1e999]]}).encode(), 400),
        ("POST", f"/v1/models/{model_name}:predict", json.dumps({"rows": [sample]}).encode(), 400),
        ("POST", f"/v2/models/{model_name}/infer", b"[" * 1500 + b"]" * 1500, 400),
        (
            "POST",
            f"/v2/models/{model_name}/infer",
            json.dumps({"inputs": [{**request["inputs"][0], "shape": [1, 1]}]}).encode(),
            400,
        ),
        (
            "POST",
            f"/v2/models/{model_name}/infer",
            json.dumps({"inputs": [{**request["inputs"][0], "name": "nope"}]}).encode(),
            400,
        ),
        (
            "POST",
            f"/v2/models/{model_name}/infer",
            json.dumps({"inputs": [{**request["inputs"][0], "datatype": "BYTES"}]}).encode(),
            400,
        ),
        ("POST", f"/v2/models/{model_name}/infer", json.dumps({**request, "extra": 1}).encode(), 400),
        ("POST", f"/v2/models/{model_name}/infer", b'{"inputs": [{"data": NaN}]}', 400),
        ("POST", "/v2/models/no-such-model/infer", json.dumps(request).encode(), 404),
        ("GET", "/v2/models/no-such-model", None, 404),
        ("GET", "/no/such/route", None, 404),
        ("GET", f"/v2/models/{model_name}/infer", None, 405),
        ("POST", "/v2/health/live", b"{}", 405),
    ]
    for method, path, raw, expected in bad:
        status, headers, payload = c.request(method, path, raw=raw)
        where = f"{method} {path} {(raw or b'')[:40]!r}"
        assert status == expected, f"{where}: {status}, expected {expected}: {payload[:200]!r}"
        assert "error" in json.loads(payload), f"{where}: no error message"

    status, headers, payload = c.request("GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain"), f"/metrics: {status}"
    text = payload.decode()
    for series in (
        "modelstack_requests_total{",
        "modelstack_request_duration_seconds_bucket{",
        "modelstack_batch_size_bucket{",
        "modelstack_inference_duration_seconds_bucket{",
    ):
        assert series in text, f"/metrics has no {series}"
    assert 'route="v2_infer",status="200"' in text, "/metrics does not count V2 infer requests"

    status, doc = c.json("GET", "/v2/health/ready", auth=False)
    assert status == 200, "the server stopped being ready after the client errors"
    return meta


def _main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Protocol conformance checks against a running server")
    parser.add_argument("base_url")
    parser.add_argument("model_name")
    parser.add_argument("--zeros", type=int, nargs="+", required=True, help="sample shape, filled with 0.0")
    parser.add_argument("--api-key")
    args = parser.parse_args(argv)
    sample: Any = 0.0
    for dim in reversed(args.zeros):
        sample = [sample] * dim
    check_conformance(args.base_url, args.model_name, sample, api_key=args.api_key)
    print("conformance: ok")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

"""What prep measured is what the container serves: the chosen variant's image is rendered and built,
the whole evaluation set goes to it over HTTP, and its outputs equal prep's stored outputs bit for bit
(so the accuracy the gate approved is the accuracy served), for the default int8 variant and for
int8 inputs and outputs (where the runtime quantizes the float inputs itself)."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.processes import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.tf, pytest.mark.timeout(600)]

OWNER = "tests/served-outputs"


def _call(url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _wait_ready(base: str, container: Any, timeout_s: float = 60.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    container.reload()
    pytest.fail(f"the container never got ready ({container.status}):\n{container.logs().decode()[-3000:]}")


@pytest.mark.parametrize("variant", ["litert-int8", "litert-int8-io"])
def test_the_container_serves_exactly_the_outputs_prep_measured(
    variant: str, digits_example: Path, tmp_path: Path
) -> None:
    import docker

    from iac.build.render import render
    from iac.spec.load import load_resolved
    from modelprep.evaluate import score
    from modelprep.prep import prep
    from modelprep.request import prep_request

    spec = digits_example / f"{variant}.yaml"
    text = re.sub(r"quantization: int8\b.*", f"variants: [{variant}]", (digits_example / "model.yaml").read_text())
    spec.write_text(text)
    resolved = load_resolved(spec)
    result = prep(prep_request(resolved))
    report = result.report
    assert report.variant == variant
    measured = np.load(result.outputs_path)

    render(resolved, result.artifact_path, report, tmp_path / "context")
    client = docker.from_env(timeout=300)
    tag = f"modelstack-test-outputs:{variant}-{uuid.uuid4().hex[:8]}"
    image, _logs = client.images.build(
        path=str(tmp_path / "context"),
        tag=tag,
        rm=True,
        forcerm=True,
        pull=False,
        labels={"org.modelstack.owner": OWNER},
    )
    port = free_port()
    container = client.containers.run(
        image.id,
        detach=True,
        ports={"8501/tcp": ("127.0.0.1", port)},
        read_only=True,
        cap_drop=["ALL"],
        tmpfs={"/tmp": "rw,noexec,nosuid,size=16m"},
        labels={"org.modelstack.owner": OWNER},
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base, container)
        with np.load(resolved.evaluation_path) as data:
            x, y = data["x"].astype(np.float32), data["y"]
        url = f"{base}/v1/models/digits:predict"
        # One sample a request, as clients send them ...
        one_by_one = np.asarray(
            [_call(url, {"instances": [row.tolist()]})["predictions"][0] for row in x], dtype=np.float32
        )
        # ... and the whole set in one request (the runtime splits it into its batch buckets).
        at_once = np.asarray(_call(url, {"instances": x.tolist()})["predictions"], dtype=np.float32)
        metadata = _call(f"{base}/v1/models/digits/metadata")["metadata"]["modelstack"]
    finally:
        container.remove(force=True)
        client.images.remove(image.id, force=True)

    assert one_by_one.shape == measured.shape == (len(x), 10)
    np.testing.assert_array_equal(one_by_one, measured)
    np.testing.assert_array_equal(at_once, measured)
    assert round(score(report.metric.value, one_by_one, y, report.top_k or 5), 6) == report.accuracy
    assert metadata == report.served().model_dump(mode="json")

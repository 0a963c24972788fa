"""The whole path with the real Pulumi engine and Docker Engine, on a temporary local backend:
up → predictions → change the quantization → preview shows the updates → up → destroy → nothing left."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conformance import check_conformance

from harness.sandbox import Sandbox, get, healers, leftovers, post

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.pulumi, pytest.mark.tf, pytest.mark.timeout(900)]


def test_up_predict_change_preview_up_destroy(digits_example: Path, tmp_path: Path) -> None:
    stack = Sandbox(tmp_path, digits_example)
    stack.pulumi("stack", "init", stack.name)
    try:
        stack.pulumi("up", "--yes", "--skip-preview")
        first = stack.outputs()
        assert first["variant"] == "litert-int8"
        assert first["endpoint"] == stack.endpoint
        assert first["replicas"] == 2

        with np.load(digits_example / "data" / "evaluation.npz") as data:
            x, y = data["x"][:60], data["y"][:60]
        predicted = [int(np.argmax(post(stack.endpoint, {"instances": [row.tolist()]})["predictions"][0])) for row in x]
        assert sum(int(p == label) for p, label in zip(predicted, y)) >= 50
        # Each built container passes the same protocol checks as the local server (directly, at its
        # address on the stack's network, as the rollout probes it: /metrics are per replica).
        for replica in stack.containers("model"):
            address = replica.attrs["NetworkSettings"]["Networks"][f"modelstack-{stack.name}-digits"]["IPAddress"]
            check_conformance(f"http://{address}:8501", "digits", x[0].tolist())

        stack.edit_spec("quantization: int8", "quantization: dynamic")
        preview = json.loads(stack.pulumi("preview", "--json"))
        ops = {step["urn"].rsplit("::", 1)[-1]: step["op"] for step in preview["steps"]}
        assert ops["digits-artifact"] == "update"
        assert ops["digits-image"] == "update"
        assert ops["digits-replicas"] == "update"
        assert ops.get("digits-network", "same") == "same"
        assert ops.get("digits-proxy", "same") == "same"

        stack.pulumi("up", "--yes", "--skip-preview")
        second = stack.outputs()
        assert second["variant"] == "litert-dynamic"
        assert second["image_id"] != first["image_id"]
        assert second["artifact_size_bytes"] != first["artifact_size_bytes"]
        assert (
            get(f"{stack.base_url}/v1/models/digits/metadata")["metadata"]["modelstack"]["variant"] == "litert-dynamic"
        )
    finally:
        stack.pulumi("destroy", "--yes")
    assert leftovers(stack.owner) == {"containers": [], "networks": [], "images": []}
    assert healers(stack.owner) == []

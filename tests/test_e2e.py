"""The whole path with the real Pulumi engine and Docker Engine, on a temporary local backend:
up → predictions → change the quantization → preview shows the updates → up → destroy → nothing left."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
PULUMI = REPO / ".tools" / "bin" / "pulumi"
OWNER_LABEL = "org.modelstack.owner"

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.pulumi, pytest.mark.tf, pytest.mark.timeout(900)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Stack:
    """A copy of stacks/digits in a temp dir with its own state, stack name and host port."""

    def __init__(self, root: Path, example: Path) -> None:
        if not PULUMI.is_file():
            pytest.fail(f"{PULUMI} is missing: run `make setup` (scripts/pulumi_cli.sh)")
        self.dir = root / "digits"
        self.dir.mkdir()
        for name in ("Pulumi.yaml", "__main__.py", "model.yaml"):
            shutil.copy(REPO / "stacks" / "digits" / name, self.dir / name)
        for sub in ("model", "data"):
            shutil.copytree(example / sub, self.dir / sub)
        (root / "state").mkdir()
        pulumi_yaml = (self.dir / "Pulumi.yaml").read_text().replace("file://./.pulumi-state", f"file://{root / 'state'}")
        (self.dir / "Pulumi.yaml").write_text(pulumi_yaml)
        self.port = free_port()
        self.edit_spec("host_port: 8501", f"host_port: {self.port}")
        self.name = f"e2e-{uuid.uuid4().hex[:8]}"
        self.owner = f"digits/{self.name}/digits"
        self.env = {
            **os.environ,
            "PATH": f"{PULUMI.parent}:{os.environ['PATH']}",
            "PULUMI_CONFIG_PASSPHRASE": "e2e",
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_HOME": str(root / "pulumi-home"),
        }

    def edit_spec(self, old: str, new: str) -> None:
        spec = self.dir / "model.yaml"
        text = spec.read_text()
        assert old in text
        spec.write_text(text.replace(old, new))

    def pulumi(self, *args: str) -> str:
        run = subprocess.run([str(PULUMI), *args, "--non-interactive", "--color", "never"], cwd=self.dir,
                             env=self.env, capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, f"pulumi {' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        return run.stdout

    def outputs(self) -> dict:
        return json.loads(self.pulumi("stack", "output", "--json"))


def post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def leftovers(owner: str) -> dict[str, list[str]]:
    import docker

    client = docker.from_env()
    label = {"label": f"{OWNER_LABEL}={owner}"}
    return {
        "containers": [c.name for c in client.containers.list(all=True, filters=label)],
        "networks": [n.name for n in client.networks.list(filters=label)],
        "images": [i.id for i in client.images.list(filters=label)],
    }


def test_up_predict_change_preview_up_destroy(digits_example: Path, tmp_path: Path) -> None:
    stack = Stack(tmp_path, digits_example)
    stack.pulumi("stack", "init", stack.name)
    try:
        stack.pulumi("up", "--yes", "--skip-preview")
        first = stack.outputs()
        assert first["variant"] == "litert-int8"
        assert first["endpoint"] == f"http://127.0.0.1:{stack.port}/v1/models/digits:predict"

        with np.load(digits_example / "data" / "evaluation.npz") as data:
            x, y = data["x"][:60], data["y"][:60]
        predicted = [int(np.argmax(post(first["endpoint"], {"instances": [row.tolist()]})["predictions"][0])) for row in x]
        assert sum(int(p == label) for p, label in zip(predicted, y)) >= 50

        stack.edit_spec("quantization: int8", "quantization: dynamic")
        preview = json.loads(stack.pulumi("preview", "--json"))
        ops = {step["urn"].rsplit("::", 1)[-1]: step["op"] for step in preview["steps"]}
        assert ops["digits-artifact"] == "update"
        assert ops["digits-image"] == "update"
        assert ops["digits-container"] == "update"
        assert ops.get("digits-network", "same") == "same"

        stack.pulumi("up", "--yes", "--skip-preview")
        second = stack.outputs()
        assert second["variant"] == "litert-dynamic"
        assert second["image_id"] != first["image_id"]
        assert second["artifact_size_bytes"] != first["artifact_size_bytes"]
        metadata = get(f"http://127.0.0.1:{stack.port}/v1/models/digits/metadata")
        assert json.dumps(metadata).count("litert-dynamic") >= 1
    finally:
        stack.pulumi("destroy", "--yes")
    assert leftovers(stack.owner) == {"containers": [], "networks": [], "images": []}

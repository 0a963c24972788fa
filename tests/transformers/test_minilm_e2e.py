"""The MiniLM stack end to end: `pulumi up` on a temporary local backend (the packaged weights prepped without
PyTorch, the image built, the replica rolled out), predictions over HTTP checked against the float model,
then `pulumi destroy`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.pulumi, pytest.mark.tf, pytest.mark.timeout(3600)]

REPO = Path(__file__).resolve().parents[2]
PULUMI = REPO / ".tools" / "bin" / "pulumi"


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_minilm_stack_up_serves_embeddings_close_to_the_float_model(tmp_path: Path) -> None:
    from harness.processes import free_port
    from iac.spec.load import load_resolved
    from modelprep.cache import Cache
    from modelprep.examples import minilm
    from modelprep.prep import baseline_outputs as float_outputs
    from modelprep.request import prep_request

    subprocess.run(["bash", str(REPO / "scripts" / "nlp_assets.sh")], check=True)
    project = tmp_path / "minilm"
    project.mkdir()
    for name in ("Pulumi.yaml", "__main__.py"):
        shutil.copy(REPO / "stacks" / "minilm" / name, project / name)
    port = free_port()
    spec = (
        (REPO / "modelprep" / "examples" / "specs" / "minilm.yaml")
        .read_text()
        .replace("host_port: 8511", f"host_port: {port}")
    )
    (project / "model.yaml").write_text(spec)
    minilm.main(str(project))
    (tmp_path / "state").mkdir()
    pulumi_yaml = (
        (project / "Pulumi.yaml").read_text().replace("file://./.pulumi-state", f"file://{tmp_path / 'state'}")
    )
    (project / "Pulumi.yaml").write_text(pulumi_yaml.replace("../../.venv", str(REPO / ".venv")))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PULUMI_")},
        "PATH": f"{PULUMI.parent}:{REPO / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
        "PULUMI_CONFIG_PASSPHRASE": "modelstack-sandbox",
        "PULUMI_SKIP_UPDATE_CHECK": "true",
        "PULUMI_HOME": str(tmp_path / "pulumi-home"),
    }

    def pulumi(*args: str) -> str:
        run = subprocess.run(
            [str(PULUMI), *args, "--non-interactive", "--color", "never"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=3000,
        )
        assert run.returncode == 0, f"pulumi {' '.join(args)}:\n{run.stdout[-4000:]}\n{run.stderr[-3000:]}"
        return run.stdout

    stack = f"t{uuid.uuid4().hex[:8]}"
    pulumi("stack", "init", stack)
    try:
        pulumi("up", "--yes", "--skip-preview")
        outputs = json.loads(pulumi("stack", "output", "--json"))
        assert outputs["variant"] == "onnx-dynamic"
        endpoint = outputs["endpoint"]
        # Every text the gate was measured on, one request each: what is served must pass the gate
        # prep applied (mean cosine >= 0.99 over the set), not only on a subset's luck.
        texts = [line for line in (project / "data" / "evaluation.txt").read_text().splitlines() if line]
        reference = float_outputs(prep_request(load_resolved(project / "model.yaml")), Cache())
        assert reference is not None and len(reference) == len(texts), (
            len(texts),
            None if reference is None else len(reference),
        )
        served = np.array([_post(endpoint, {"instances": [t]})["predictions"][0] for t in texts], dtype=np.float32)
        cos = np.sum(served * reference, axis=1) / (np.linalg.norm(served, axis=1) * np.linalg.norm(reference, axis=1))
        assert cos.mean() >= 0.99 and cos.min() >= 0.95, (cos.mean(), cos.min())
        np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-3)
        v2 = _post(
            endpoint.replace("/v1/models/minilm:predict", "/v2/models/minilm/infer"),
            {"inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts[:2]}]},
        )
        pair = np.array(v2["outputs"][0]["data"], dtype=np.float32).reshape(2, -1)
        assert np.all(np.sum(pair * served[:2], axis=1) > 0.99)  # int8 activations are scaled per batch
    finally:
        pulumi("destroy", "--yes", "--skip-preview")
        pulumi("stack", "rm", "--yes", stack)

"""What `modelstack status` and `modelstack diff` read: the running service (through its proxy
and the docker labels of its containers) and the cached prep result of an edited spec."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from iac.pipeline import base_url, endpoint, prep_request
from iac.spec import ResolvedSpec


@dataclass(frozen=True)
class ServiceStatus:
    endpoint: str
    owner: str
    serving: dict[str, Any] | None  # the modelstack metadata the proxy returns, None when down
    replicas: list[tuple[str, str, str]]  # (name, status, health)
    proxy: str | None
    healer: bool

    @property
    def ready(self) -> int:
        return sum(1 for _, status, health in self.replicas if status == "running" and health == "healthy")


def owner_of(spec: ResolvedSpec, stack: str) -> str:
    """The owner label of a deployed spec: <Pulumi project>/<stack>/<service name>."""
    project_file = Path(spec.spec_file).parent / "Pulumi.yaml"
    project = yaml.safe_load(project_file.read_text())["name"] if project_file.is_file() else spec.name
    return f"{project}/{stack}/{spec.name}"


def served_metadata(spec: ResolvedSpec) -> dict[str, Any] | None:
    """The deployed server's metadata; the API key is read from the variable the spec names."""
    headers = {}
    key_env = spec.spec.serving.api_key_env
    if key_env and (key := os.environ.get(key_env)):
        headers["Authorization"] = f"Bearer {key}"
    url = f"{base_url(spec)}/v1/models/{spec.name}/metadata"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as response:
            return dict(json.loads(response.read())["metadata"])
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError, KeyError, ValueError):
        return None


def status(spec: ResolvedSpec, stack: str) -> ServiceStatus:
    from iac.providers.common import OWNER_LABEL, docker_client
    from iac.providers.healer import healer_pids

    owner = owner_of(spec, stack)
    containers = docker_client().containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}"})
    replicas, proxy = [], None
    for c in containers:
        health = c.attrs["State"].get("Health", {}).get("Status", "none")
        if c.labels.get("org.modelstack.role") == "model":
            replicas.append((c.name, c.status, health))
        elif c.labels.get("org.modelstack.role") == "proxy":
            proxy = c.status
    healer = bool(healer_pids(owner))
    metadata = served_metadata(spec)
    return ServiceStatus(endpoint(spec), owner, metadata.get("modelstack") if metadata else None,
                         sorted(replicas), proxy, healer)


@dataclass(frozen=True)
class ModelChange:
    field: str
    deployed: str
    edited: str

    @property
    def changed(self) -> bool:
        return self.deployed != self.edited


def model_diff(spec: ResolvedSpec) -> tuple[list[ModelChange], str | None]:
    """What changes in the model if this spec is rolled out; (changes, None), or ([], why not)."""
    from modelprep.prep import cached_result

    cached = cached_result(prep_request(spec))
    if cached is None:
        return [], f"no prep result is cached for this spec yet: run `modelstack prep {spec.spec_file}` first"
    metadata = served_metadata(spec)
    deployed = (metadata or {}).get("modelstack", {})
    signature = _served_signature(metadata or {})
    report = cached.report
    edited_signature = ", ".join(f"{t.name}{list(t.shape)}:{t.dtype.value}" for t in spec.spec.model.inputs)
    rows = [
        ("variant", deployed.get("variant"), report["variant"]),
        ("quantization", deployed.get("quantization"), report["quantization"]),
        ("artifact bytes", deployed.get("size_bytes"), report["size_bytes"]),
        ("accuracy", deployed.get("accuracy"), report["accuracy"]),
        ("artifact sha256", str(deployed.get("artifact_sha256", ""))[:12] or None, report["artifact_sha256"][:12]),
        ("input signature", signature, edited_signature),
    ]
    return [ModelChange(name, _show(old), _show(new)) for name, old, new in rows], None


def _served_signature(metadata: dict[str, Any]) -> str | None:
    try:
        inputs = metadata["signature_def"]["signature_def"]["serving_default"]["inputs"]
    except (KeyError, TypeError):
        return None
    parts = []
    for name, tensor in sorted(inputs.items()):
        dims = [int(d["size"]) for d in tensor["tensor_shape"]["dim"]][1:]
        dtype = {"DT_FLOAT": "float32"}.get(tensor.get("dtype", ""), tensor.get("dtype", "?"))
        parts.append(f"{name}{dims}:{dtype}")
    return ", ".join(parts)


def _show(value: Any) -> str:
    return "—" if value is None else str(value)

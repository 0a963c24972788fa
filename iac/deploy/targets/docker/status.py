"""`modelstack status` for the Docker target: containers by owner label, the healer, what the proxy serves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from iac.deploy.targets.docker.settings import base_url, docker_settings, endpoint
from iac.service_client import served_metadata
from iac.spec.models import ResolvedSpec


@dataclass(frozen=True)
class ServiceStatus:
    endpoint: str
    owner: str
    serving: dict[str, Any] | None  # the prep report the served model carries, None when nothing answers
    replicas: list[tuple[str, str, str]]  # (name, status, health)
    proxy: str | None
    healer: bool
    wanted: int  # deploy.replicas

    @property
    def ready(self) -> int:
        return sum(1 for _, status, health in self.replicas if status == "running" and health in READY)


# Docker's first HEALTHCHECK runs one interval after the start; until then a replica whose /readyz
# answers (what the rollout gates on) is ready, and says its Docker check is still to come.
READY = ("healthy", "ready (Docker check pending)")


def owner_of(spec: ResolvedSpec, stack: str) -> str:
    """The owner label's prefix for a deployed spec: <Pulumi project>/<stack>/<service name>."""
    project_file = Path(spec.spec_file).parent / "Pulumi.yaml"
    project = yaml.safe_load(project_file.read_text())["name"] if project_file.is_file() else spec.name
    return f"{project}/{stack}/{spec.name}"


def status(spec: ResolvedSpec, stack: str) -> ServiceStatus:
    from iac.deploy.dynamic import OWNER_LABEL, docker_client
    from iac.deploy.identity import owner_prefix
    from iac.deploy.targets.docker.healer import healer_pids

    # The label carries the stack id after an `@`, which only the stack's state knows: match the prefix.
    prefix = owner_of(spec, stack)
    containers = [
        c
        for c in docker_client().containers.list(all=True, filters={"label": OWNER_LABEL})
        if owner_prefix(c.labels.get(OWNER_LABEL, "")) == prefix
    ]
    owner = next((c.labels[OWNER_LABEL] for c in containers if c.labels.get("org.modelstack.role") == "proxy"), prefix)
    replicas, proxy = [], None
    for c in containers:
        health = c.attrs["State"].get("Health", {}).get("Status", "none")
        if c.labels.get("org.modelstack.role") == "model":
            if c.status == "running" and health == "starting" and _answers_readyz(c, spec.spec.serving.port):
                health = READY[1]
            replicas.append((c.name, c.status, health))
        elif c.labels.get("org.modelstack.role") == "proxy":
            proxy = c.status
    metadata = served_metadata(base_url(spec), spec)
    return ServiceStatus(
        endpoint(spec),
        owner,
        metadata.get("modelstack") if metadata else None,
        sorted(replicas),
        proxy,
        bool(healer_pids(owner)),
        docker_settings(spec).replicas,
    )


def _answers_readyz(container: Any, port: int) -> bool:
    """Ask the replica itself, at its address on the stack's bridge network (reachable from this host)."""
    import urllib.request

    for network in container.attrs["NetworkSettings"]["Networks"].values():
        if address := network.get("IPAddress"):
            try:
                with urllib.request.urlopen(f"http://{address}:{port}/readyz", timeout=1) as response:
                    return response.status == 200
            except OSError:
                return False
    return False

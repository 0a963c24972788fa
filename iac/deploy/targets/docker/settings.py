"""What the Docker target derives from a spec: replica and proxy settings, and the URLs clients call."""

from __future__ import annotations

from typing import Any

from iac.spec.models import ResolvedSpec


def replica_settings(spec: ResolvedSpec) -> dict[str, Any]:
    """What a model container runs with; a change rolls out new replicas."""
    from iac.spec.models import memory_bytes

    d = spec.spec.deploy
    return {
        "port": spec.spec.serving.port,
        "host_port": d.host_port,
        "cpus": d.cpus,
        "memory_bytes": memory_bytes(d.memory),
        "pids": 256,
    }


def proxy_settings(spec: ResolvedSpec) -> dict[str, Any]:
    from iac.build.proxy_config import PROXY_PORT

    d = spec.spec.deploy
    return {"bind_address": str(d.bind_address), "host_port": d.host_port, "proxy_port": PROXY_PORT}


def probe_host(spec: ResolvedSpec) -> str:
    """Where this host reaches the proxy (a wildcard bind is reachable on loopback)."""
    address = str(spec.spec.deploy.bind_address)
    return "127.0.0.1" if address == "0.0.0.0" else address


def base_url(spec: ResolvedSpec) -> str:
    return f"http://{probe_host(spec)}:{spec.spec.deploy.host_port}"


def endpoint(spec: ResolvedSpec) -> str:
    return f"{base_url(spec)}/v1/models/{spec.spec.name}:predict"

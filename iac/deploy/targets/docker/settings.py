"""What the Docker target derives from a spec: replica and proxy settings, and the URLs clients call."""

from __future__ import annotations

from typing import Any

from iac.spec.models import DockerDeploy, ResolvedSpec


def docker_settings(spec: ResolvedSpec) -> DockerDeploy:
    """The spec's deploy section, which names this target."""
    d = spec.spec.deploy
    if not isinstance(d, DockerDeploy):
        raise ValueError(f"the docker target was handed a spec for target {d.target}")
    return d


def replica_settings(spec: ResolvedSpec) -> dict[str, Any]:
    """What a model container runs with; a change rolls out new replicas."""
    from iac.spec.models import memory_bytes

    d = docker_settings(spec)
    settings = {
        "port": spec.spec.serving.port,
        "host_port": d.host_port,
        "cpus": d.cpus,
        "memory_bytes": memory_bytes(d.memory),
        "pids": 256,
    }
    if publishes_grpc(spec):  # the proxy's gRPC upstream lists the replicas at this port
        settings["grpc_port"] = spec.spec.serving.grpc_port
    return settings


def publishes_grpc(spec: ResolvedSpec) -> bool:
    """The proxy passes gRPC on deploy.grpc_host_port to the replicas' serving.grpc_port."""
    return docker_settings(spec).grpc_host_port is not None and spec.spec.serving.grpc_port is not None


def proxy_settings(spec: ResolvedSpec) -> dict[str, Any]:
    from iac.build.proxy_config import PROXY_GRPC_PORT, PROXY_PORT

    d = docker_settings(spec)
    settings = {"bind_address": str(d.bind_address), "host_port": d.host_port, "proxy_port": PROXY_PORT}
    if publishes_grpc(spec):
        settings.update(grpc_host_port=d.grpc_host_port, proxy_grpc_port=PROXY_GRPC_PORT)
    return settings


def probe_host(spec: ResolvedSpec) -> str:
    """Where this host reaches the proxy (a wildcard bind is reachable on loopback)."""
    address = str(docker_settings(spec).bind_address)
    return "127.0.0.1" if address == "0.0.0.0" else address


def base_url(spec: ResolvedSpec) -> str:
    return f"http://{probe_host(spec)}:{docker_settings(spec).host_port}"


def endpoint(spec: ResolvedSpec) -> str:
    return f"{base_url(spec)}/v1/models/{spec.spec.name}:predict"


def grpc_target(spec: ResolvedSpec) -> str | None:
    """host:port of the proxy's gRPC service (what a gRPC client dials), or None when not published."""
    return f"{probe_host(spec)}:{docker_settings(spec).grpc_host_port}" if publishes_grpc(spec) else None


def replica_address(container: Any, network_name: str) -> str | None:
    """A replica container's address on the stack's network (None before it has one)."""
    networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
    return (networks.get(network_name) or {}).get("IPAddress") or None

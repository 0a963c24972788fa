"""What the Docker target derives from a spec: replica and proxy settings, and the URLs clients call.

A replica's memory limit and stop grace period follow from the model when its family says what the
chosen variant needs (`modelprep.family.ServingNeeds`, e.g. a language model's weights and KV cache):
the limit is that figure unless deploy.memory is written, which may not be less; the grace period
covers the server's drain for the model's longest requests.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from iac.spec.errors import UserError
from iac.spec.models import DockerDeploy, ResolvedSpec

if TYPE_CHECKING:
    from modelprep.family import ServingNeeds

# Docker's stop timeout beyond the server's drain: the engine's accepted work and the exit.
STOP_MARGIN_S = 5
DEFAULT_STOP_GRACE_S = 10  # Docker's own default, for models whose family states no needs


def docker_settings(spec: ResolvedSpec) -> DockerDeploy:
    """The spec's deploy section, which names this target."""
    d = spec.spec.deploy
    if not isinstance(d, DockerDeploy):
        raise ValueError(f"the docker target was handed a spec for target {d.target}")
    return d


def replica_settings(spec: ResolvedSpec, needs: ServingNeeds | None = None) -> dict[str, Any]:
    """What a model container runs with; a change rolls out new replicas. `needs`: what the model's
    family says the chosen variant needs (None: the spec's limits as written, the default grace)."""
    d = docker_settings(spec)
    settings = {
        "port": spec.spec.serving.port,
        "host_port": d.host_port,
        "cpus": d.cpus,
        "memory_bytes": memory_limit(spec, needs),
        "pids": 256,
    }
    if publishes_grpc(spec):  # the proxy's gRPC upstream lists the replicas at this port
        settings["grpc_port"] = spec.spec.serving.grpc_port
    if needs is not None:  # absent otherwise: the replicas of a model without needs keep their version
        settings["stop_grace_s"] = stop_grace_s(needs)
    return settings


def memory_limit(spec: ResolvedSpec, needs: ServingNeeds | None) -> int:
    """deploy.memory as written; else what the model needs (else the default). Written below the need,
    it is a located error naming the figure, before any replica starts and is killed out of memory."""
    from iac.spec.models import memory_bytes

    d = docker_settings(spec)
    if needs is None:
        return memory_bytes(d.memory)
    if "memory" not in d.model_fields_set:
        return needs.memory_bytes
    if memory_bytes(d.memory) < needs.memory_bytes:
        least = math.ceil(needs.memory_bytes / 2**20)
        raise UserError.single(
            spec.where("deploy.memory"),
            "deploy.memory",
            f"{d.memory} is less than the {least:,} MiB a replica of this model needs: {needs.memory_detail}",
            f"set deploy.memory to at least {least}Mi (or leave it out to get that), "
            "or lower serving.context_length or serving.max_sequences",
        )
    return memory_bytes(d.memory)


def stop_grace_s(needs: ServingNeeds | None) -> int:
    """Seconds Docker waits after SIGTERM before it kills a replica: the server's drain and a margin."""
    return DEFAULT_STOP_GRACE_S if needs is None else math.ceil(needs.drain_s) + STOP_MARGIN_S


def warm_up(spec: ResolvedSpec) -> dict[str, Any]:
    """The request the rollout sends a new replica once /readyz answers 200: the serving family's own
    (`serving.families.warm_up_request`), else a predict on zeros of the spec's inputs."""
    from serving.families import warm_up_request

    own = warm_up_request(spec.task.value, spec.name)
    if own is not None:
        # The body as JSON text: Pulumi state turns every number into a float (max_tokens 1 -> 1.0).
        return {"warm_up": {"path": own[0], "body": json.dumps(own[1], sort_keys=True)}}
    return {
        "input_shape": list(spec.inputs[0].shape or []),
        # several named inputs: the warm-up request names each (absent for one input)
        **(
            {"inputs": [[t.name, list(t.shape or []), t.dtype.value] for t in spec.inputs]}
            if len(spec.inputs) > 1
            else {}
        ),
    }


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
    """The URL a client calls first: the model family's route (predict, chat, transcription)."""
    from serving.families import endpoint_path

    return base_url(spec) + endpoint_path(spec.task.value, spec.name)


def grpc_target(spec: ResolvedSpec) -> str | None:
    """host:port of the proxy's gRPC service (what a gRPC client dials), or None when not published."""
    return f"{probe_host(spec)}:{docker_settings(spec).grpc_host_port}" if publishes_grpc(spec) else None


def replica_address(container: Any, network_name: str) -> str | None:
    """A replica container's address on the stack's network (None before it has one)."""
    networks = container.attrs.get("NetworkSettings", {}).get("Networks") or {}
    return (networks.get(network_name) or {}).get("IPAddress") or None

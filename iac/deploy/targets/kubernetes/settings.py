"""What the Kubernetes target derives from a spec: object names, labels, the kubeconfig, the in-cluster URLs."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iac.spec.errors import UserError
from iac.spec.models import KubernetesDeploy, ResolvedSpec

if TYPE_CHECKING:
    from modelprep.family import ServingNeeds

MANAGED_BY = "modelstack"
DRAIN_MARGIN_S = 6  # terminationGracePeriod = preStop delay + the server's drain time + this
PRESTOP_DELAY_S = 5  # endpoints drop the pod before SIGTERM reaches the server
TMP_SIZE = "16Mi"  # the only writable path (/tmp), like the Docker target's tmpfs


def settings(spec: ResolvedSpec) -> KubernetesDeploy:
    """The spec's deploy section, which names this target."""
    k = spec.spec.deploy
    if not isinstance(k, KubernetesDeploy):
        raise ValueError(f"the kubernetes target was handed a spec for target {k.target}")
    return k


def pod_resources(spec: ResolvedSpec, needs: ServingNeeds | None) -> dict[str, dict[str, str]]:
    """The model container's requests and limits: as written; else, when the model's family says what a
    replica needs (a language model's weights and KV cache, say), that memory requested and as the limit.
    A limit written below the need is a located error naming the figure, before any pod is killed out of
    memory."""
    from iac.spec.models import memory_bytes

    r = settings(spec).resources
    written = {"requests": r.requests.model_dump(), "limits": r.limits.model_dump()}
    if needs is None:
        return written
    least = math.ceil(needs.memory_bytes / 2**20)
    if "resources" not in settings(spec).model_fields_set or "limits" not in r.model_fields_set:
        # A written request stays (the limit then at least that); else the need is requested too.
        asked = "resources" in settings(spec).model_fields_set and "requests" in r.model_fields_set
        request = r.requests.memory if asked else f"{least}Mi"
        limit = f"{max(least, math.ceil(memory_bytes(request) / 2**20))}Mi"
        return {
            "requests": {**written["requests"], "memory": request},
            "limits": {**written["limits"], "memory": limit},
        }
    if memory_bytes(r.limits.memory) < needs.memory_bytes:
        field = "deploy.resources.limits.memory"
        raise UserError.single(
            spec.where(field),
            field,
            f"{r.limits.memory} is less than the {least:,} MiB a replica of this model needs: {needs.memory_detail}",
            f"set {field} to at least {least}Mi (or leave resources.limits out to get that)",
        )
    return written


def grace_period_s(needs: ServingNeeds | None) -> int:
    """A pod's terminationGracePeriod: the preStop delay, then the server's drain on SIGTERM (the model's
    longest requests when its family says, else the server's default), with a margin."""
    from serving.lifecycle import DRAIN_TIMEOUT_S

    drain = DRAIN_TIMEOUT_S if needs is None else needs.drain_s
    return PRESTOP_DELAY_S + math.ceil(drain) + DRAIN_MARGIN_S


def selector_labels(spec: ResolvedSpec) -> dict[str, str]:
    """What the Deployment, Service, PDB and NetworkPolicy select pods by (never changes for a service)."""
    return {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/instance": spec.name}


def object_labels(spec: ResolvedSpec) -> dict[str, str]:
    return {**settings(spec).labels, **selector_labels(spec), "app.kubernetes.io/managed-by": MANAGED_BY}


def kubeconfig_path(spec: ResolvedSpec) -> str | None:
    """The kubeconfig the spec names (relative to model.yaml), else None: the provider and the client
    then follow the usual rules ($KUBECONFIG, else ~/.kube/config)."""
    written = settings(spec).kubeconfig
    if written is None:
        return None
    path = Path(os.path.expanduser(written))
    return str(path if path.is_absolute() else (Path(spec.spec_file).parent / path).resolve())


def cluster_access(spec: ResolvedSpec) -> dict[str, str | None]:
    """What a dynamic provider needs to reach the spec's namespace (`access.Cluster.of`)."""
    k = settings(spec)
    return {"kubeconfig": kubeconfig_path(spec), "context": k.context, "namespace": k.namespace}


def repository(spec: ResolvedSpec) -> str:
    """Where the image is pushed: <registry>/<service name>."""
    return f"{settings(spec).registry}/{spec.name}"


def service_host(spec: ResolvedSpec) -> str:
    return f"{spec.name}.{settings(spec).namespace}.svc.cluster.local"


def cluster_base_url(spec: ResolvedSpec) -> str:
    """The service's URL inside the cluster (the endpoint the stack exports)."""
    return f"http://{service_host(spec)}:{spec.spec.serving.port}"


def cluster_grpc_address(spec: ResolvedSpec) -> str | None:
    """host:port of the service's gRPC port inside the cluster; None when gRPC is off."""
    port = spec.spec.serving.grpc_port
    return None if port is None else f"{service_host(spec)}:{port}"


def cluster_endpoint(spec: ResolvedSpec) -> str:
    return cluster_base_url(spec) + _endpoint_path(spec)


def _endpoint_path(spec: ResolvedSpec) -> str:
    """The model family's first route (predict, chat, transcription)."""
    from serving.families import endpoint_path

    return endpoint_path(spec.task.value, spec.name)


def api_client(spec: ResolvedSpec) -> Any:
    """A Kubernetes API client for the spec's cluster (kubeconfig and context as the provider uses them)."""
    from kubernetes import client

    return client.ApiClient(configuration=_configuration(spec))


def _configuration(spec: ResolvedSpec) -> Any:
    from iac.deploy.targets.kubernetes.access import configuration

    return configuration(kubeconfig_path(spec), settings(spec).context)


def base_url(spec: ResolvedSpec) -> str:
    """Where this host reaches the service: a load balancer's address, else the Service's cluster IP
    (reachable from a node of the cluster, e.g. the local one); the in-cluster name when the API
    cannot be asked."""
    try:
        from kubernetes import client

        service = client.CoreV1Api(api_client(spec)).read_namespaced_service(
            spec.name, settings(spec).namespace, _request_timeout=5
        )
    except Exception:  # noqa: BLE001 - no cluster, no service: the in-cluster name is still the answer
        return cluster_base_url(spec)
    ingress = (service.status.load_balancer.ingress or []) if service.status and service.status.load_balancer else []
    for point in ingress:
        if point.ip or point.hostname:
            return f"http://{point.ip or point.hostname}:{spec.spec.serving.port}"
    if service.spec.cluster_ip and service.spec.cluster_ip != "None":
        return f"http://{service.spec.cluster_ip}:{spec.spec.serving.port}"
    return cluster_base_url(spec)


def endpoint(spec: ResolvedSpec) -> str:
    return base_url(spec) + _endpoint_path(spec)

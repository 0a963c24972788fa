"""`modelstack status` for the Kubernetes target: the Deployment and its pods from the API, the model
the Service serves (fetched through the API server's service proxy, so it works from any machine
with the kubeconfig)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from iac.deploy.targets.kubernetes.settings import api_client, endpoint, selector_labels, settings
from iac.spec.models import ResolvedSpec


@dataclass(frozen=True)
class ServiceStatus:
    endpoint: str
    owner: str  # <namespace>/<service>
    serving: dict[str, Any] | None  # the prep report the served model carries, None when nothing answers
    replicas: list[tuple[str, str, str]]  # (pod, phase, ready or not ready)
    proxy: str | None  # the Service that routes to the pods
    healer: bool  # the Deployment exists: its controller replaces pods that die
    wanted: int  # the replicas the Deployment asks for

    @property
    def ready(self) -> int:
        return sum(1 for _, phase, health in self.replicas if phase == "Running" and health == "ready")


def status(spec: ResolvedSpec, stack: str) -> ServiceStatus:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    k = settings(spec)
    api = api_client(spec)
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    selector = ",".join(f"{key}={value}" for key, value in selector_labels(spec).items())
    pods = []
    for pod in core.list_namespaced_pod(k.namespace, label_selector=selector, _request_timeout=10).items:
        ready = any(c.type == "Ready" and c.status == "True" for c in (pod.status.conditions or []))
        phase = "Terminating" if pod.metadata.deletion_timestamp else pod.status.phase
        pods.append((pod.metadata.name, phase, "ready" if ready else "not ready"))
    try:
        deployment = apps.read_namespaced_deployment(spec.name, k.namespace, _request_timeout=10)
        wanted = int(deployment.spec.replicas or 0)
    except ApiException:
        deployment, wanted = None, k.replicas
    try:
        service = core.read_namespaced_service(spec.name, k.namespace, _request_timeout=10)
        proxy = f"{service.spec.type} {service.spec.cluster_ip}:{spec.spec.serving.port}"
    except ApiException:
        proxy = None
    metadata = _served_metadata(core, spec) if proxy else None
    return ServiceStatus(
        endpoint(spec), f"{k.namespace}/{spec.name}", metadata, sorted(pods), proxy, deployment is not None, wanted
    )


def _served_metadata(core: Any, spec: ResolvedSpec) -> dict[str, Any] | None:
    """The server's metadata document through the API server's proxy to the Service."""
    key_env = spec.spec.serving.api_key_env
    key = os.environ.get(key_env) if key_env else None
    try:
        response = core.connect_get_namespaced_service_proxy_with_path(
            f"{spec.name}:http",
            settings(spec).namespace,
            f"v1/models/{spec.name}/metadata",
            _preload_content=False,
            _request_timeout=10,
            _headers={"X-API-Key": key} if key else None,
        )
        document = json.loads(response.data)
    except Exception:  # noqa: BLE001 - nothing answers: no pod ready, or no route from the API server
        return None
    metadata = document.get("metadata") if isinstance(document, dict) else None
    return metadata.get("modelstack") if isinstance(metadata, dict) else None

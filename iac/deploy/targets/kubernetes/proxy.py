"""The proxy in front of the two versions during canary and shadow rollouts on Kubernetes, with no mesh.

The same nginx image and `nginx.conf` the Docker target runs (`iac/build/proxy_config.py`), as a
Deployment in the service's namespace: the Service users call (`<name>`) selects the proxy pods; the
proxy sends to the stable version's Service (`<name>-stable`) and, while a rollout judges a new version,
a request-weight share (nginx `split_clients`) to the candidate's Service (`<name>-candidate`), or a copy
of it (`mirror`). The upstreams are the Services' cluster IPs (no cluster DNS is assumed).

The files nginx reads live in an in-memory volume at /etc/modelstack, seeded at start from the
ConfigMap (the resting state: everything to the stable version). A rollout step rewrites the routing
files there and reloads nginx gracefully by exec in every proxy pod (`canary.py`): at once, where a
ConfigMap change reaches a pod only after the kubelet's sync. A proxy pod that restarts mid-rollout
comes back at rest, 100% to the stable version: the safe side.
"""

from __future__ import annotations

from typing import Any

from iac.build.proxy_config import (
    PARKED,
    PROXY_GRPC_PORT,
    PROXY_PORT,
    mirror_conf,
    nginx_conf,
    split_conf,
    upstream_conf,
)
from iac.deploy.targets.kubernetes.settings import object_labels, selector_labels, settings
from iac.spec.models import ResolvedSpec

PROXY_IMAGE = "modelstack-proxy:bookworm-nginx"  # the Docker target's proxy image, pushed to the registry
PROXY_UID = 33  # www-data in the Debian image
PROXY_REPLICAS = 2
CONFIG_DIR = "/etc/modelstack"  # where nginx_conf() points nginx: an emptyDir, writable by the rollout
SEED_DIR = "/etc/modelstack-seed"  # the ConfigMap, copied to CONFIG_DIR when the container starts
CONTAINER = "proxy"
PRESTOP_DELAY_S = 5  # the Service's endpoints drop the pod before nginx stops taking connections
QUIT = (
    f"sleep {PRESTOP_DELAY_S}; nginx -c {CONFIG_DIR}/nginx.conf -s quit; while [ -e /tmp/nginx.pid ]; do sleep 1; done"
)


def judged(spec: ResolvedSpec) -> bool:
    """The spec asks for a canary or shadow rollout: the proxy and the judged Rollout are deployed."""
    return bool(spec.spec.deploy.rollout.strategy != "rolling")


def proxy_name(spec: ResolvedSpec) -> str:
    return f"{spec.name}-proxy"


def stable_name(spec: ResolvedSpec) -> str:
    return f"{spec.name}-stable"


def candidate_name(spec: ResolvedSpec) -> str:
    return f"{spec.name}-candidate"


def proxy_selector(spec: ResolvedSpec) -> dict[str, str]:
    return {"app.kubernetes.io/name": proxy_name(spec), "app.kubernetes.io/instance": proxy_name(spec)}


def candidate_selector(spec: ResolvedSpec) -> dict[str, str]:
    """The new version's pods: the service's name, another instance (so the stable Service leaves them out)."""
    return {**selector_labels(spec), "app.kubernetes.io/instance": candidate_name(spec)}


def candidate_labels(spec: ResolvedSpec) -> dict[str, str]:
    return {**object_labels(spec), **candidate_selector(spec)}


def proxy_labels(spec: ResolvedSpec) -> dict[str, str]:
    return {**settings(spec).labels, **proxy_selector(spec), "app.kubernetes.io/managed-by": "modelstack"}


def grpc(spec: ResolvedSpec) -> bool:
    return spec.spec.serving.grpc_port is not None


def proxy_files(spec: ResolvedSpec, stable_ip: str, read_timeout_s: int = 60) -> dict[str, str]:
    """The ConfigMap's files: nginx.conf (waiting `read_timeout_s` for an answer) and the resting routing
    (all to the stable Service)."""
    serving = spec.spec.serving
    files = {
        "nginx.conf": nginx_conf(spec.name, PROXY_REPLICAS, grpc=grpc(spec), read_timeout_s=read_timeout_s),
        "upstream.conf": upstream_conf([stable_ip], serving.port),
        "upstream-grpc.conf": upstream_conf([stable_ip], serving.grpc_port) if serving.grpc_port else PARKED,
    }
    return {**files, **resting_files()}


def resting_files() -> dict[str, str]:
    """No rollout in progress: the stable version answers everything, nothing is copied or logged."""
    return {"upstream-candidate.conf": PARKED, "split.conf": split_conf(), "mirror.conf": mirror_conf(False)}


def step_files(strategy: str, weight: int, candidate_ip: str, port: int) -> dict[str, str]:
    """One step: `weight`% answered by (canary) or copied to (shadow) the candidate's Service; bodies logged."""
    canary = strategy == "canary"
    return {
        "upstream-candidate.conf": upstream_conf([candidate_ip], port),
        "split.conf": split_conf(weight=weight if canary else 0, shadow=0 if canary else weight, replay=True),
        "mirror.conf": mirror_conf(not canary),
    }


def grace_period_s(read_timeout_s: int) -> int:
    """The proxy pods' terminationGracePeriod: the preStop delay, then the longest a request it holds
    may wait for its answer, with a margin."""
    return PRESTOP_DELAY_S + read_timeout_s + 5


def network_policy_spec(spec: ResolvedSpec) -> dict[str, Any]:
    """The proxy pods take requests on their own ports and send only to the model's pods (stable and
    candidate alike, on the serving ports); nothing else in or out. Policies match after the Services'
    address translation, so the model pods are what the egress rule names, not the cluster IPs."""
    serving = spec.spec.serving
    own = [PROXY_PORT] + ([PROXY_GRPC_PORT] if grpc(spec) else [])
    upstream = [serving.port] + ([serving.grpc_port] if serving.grpc_port is not None else [])
    return {
        "pod_selector": {"match_labels": proxy_selector(spec)},
        "policy_types": ["Ingress", "Egress"],
        "ingress": [{"ports": [{"port": number, "protocol": "TCP"} for number in own]}],
        "egress": [
            {
                "to": [{"pod_selector": {"match_labels": {"app.kubernetes.io/name": spec.name}}}],
                "ports": [{"port": number, "protocol": "TCP"} for number in upstream],
            }
        ],
    }


def deployment_spec(spec: ResolvedSpec, image: Any, config_map: Any, config_hash: Any, grace_s: int) -> dict[str, Any]:
    """The proxy pods: restricted like the model's, read-only root, the config seeded into memory."""
    k = settings(spec)
    ports = [("http", PROXY_PORT)] + ([("grpc", PROXY_GRPC_PORT)] if grpc(spec) else [])
    nginx = f"nginx -c {CONFIG_DIR}/nginx.conf"
    container = {
        "name": CONTAINER,
        "image": image,
        "image_pull_policy": "IfNotPresent",
        "command": ["sh", "-c", f"cp {SEED_DIR}/*.conf {CONFIG_DIR}/ && exec {nginx} -g 'daemon off;'"],
        "ports": [{"name": name, "container_port": number, "protocol": "TCP"} for name, number in ports],
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "1", "memory": "128Mi"}},
        "readiness_probe": {
            "http_get": {"path": "/proxy/healthz", "port": "http"},
            "period_seconds": 2,
            "timeout_seconds": 2,
            "failure_threshold": 2,
        },
        # Endpoints drop the pod first; then nginx's graceful quit, waited for until its requests are done
        # (the master removes its pid file on exit): the kubelet's SIGTERM after the hook would be nginx's
        # fast shutdown, cutting what is still in flight. The grace period bounds the wait.
        "lifecycle": {"pre_stop": {"exec": {"command": ["sh", "-c", QUIT]}}},
        "security_context": {
            "run_as_non_root": True,
            "run_as_user": PROXY_UID,
            "run_as_group": PROXY_UID,
            "allow_privilege_escalation": False,
            "read_only_root_filesystem": True,
            "capabilities": {"drop": ["ALL"]},
            "seccomp_profile": {"type": "RuntimeDefault"},
        },
        "volume_mounts": [
            {"name": "tmp", "mount_path": "/tmp"},
            {"name": "config", "mount_path": CONFIG_DIR},
            {"name": "seed", "mount_path": SEED_DIR, "read_only": True},
        ],
    }
    pod = {
        "automount_service_account_token": False,
        "enable_service_links": False,
        "termination_grace_period_seconds": grace_s,
        "security_context": {
            "run_as_non_root": True,
            "run_as_user": PROXY_UID,
            "run_as_group": PROXY_UID,
            "seccomp_profile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [
            {"name": "tmp", "empty_dir": {"medium": "Memory", "size_limit": "64Mi"}},
            {"name": "config", "empty_dir": {"medium": "Memory", "size_limit": "1Mi"}},
            {"name": "seed", "config_map": {"name": config_map}},
        ],
        "node_selector": dict(k.node_selector) or None,
        "tolerations": [t.model_dump(exclude_none=True) for t in k.tolerations] or None,
    }
    return {
        "replicas": PROXY_REPLICAS,
        "selector": {"match_labels": proxy_selector(spec)},
        "strategy": {"type": "RollingUpdate", "rolling_update": {"max_unavailable": 0, "max_surge": 1}},
        "template": {
            # A new ConfigMap content rolls the proxy pods (they read it only at start).
            "metadata": {"labels": proxy_labels(spec), "annotations": {"modelstack.dev/proxy-config": config_hash}},
            "spec": pod,
        },
    }

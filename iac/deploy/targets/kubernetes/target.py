"""The Kubernetes target: the image pushed by digest ▶ Deployment, Service, PDB, HPA, NetworkPolicy (pulumi-kubernetes)."""

from __future__ import annotations

import math
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from iac.deploy.targets import ContentKeys, TargetArgs
from iac.deploy.targets.kubernetes.push import Push
from iac.deploy.targets.kubernetes.settings import (
    DRAIN_MARGIN_S,
    PRESTOP_DELAY_S,
    TMP_SIZE,
    cluster_base_url,
    cluster_endpoint,
    cluster_grpc_address,
    kubeconfig_path,
    object_labels,
    repository,
    selector_labels,
    settings,
)
from iac.spec.models import KubernetesDeploy, ResolvedSpec

SERVING_UID = 10001  # the image's user (templates/Dockerfile.j2)
PROBE_PERIOD_S = 2
API_KEY_FIELD = "api-key"


class Target(pulumi.ComponentResource):
    outputs: dict[str, pulumi.Output]

    def __init__(self, name: str, args: TargetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("modelstack:kubernetes:Target", name, None, opts)
        spec = args.spec
        k = settings(spec)
        provider = k8s.Provider(
            f"{name}-cluster",
            kubeconfig=kubeconfig_path(spec),
            context=k.context,
            namespace=k.namespace,
            opts=pulumi.ResourceOptions(parent=self),
        )
        child = pulumi.ResourceOptions(parent=self, provider=provider)
        labels = object_labels(spec)
        meta = {
            "name": spec.name,
            "namespace": k.namespace,
            "labels": labels,
            "annotations": dict(k.annotations) or None,
        }

        pushed = Push(
            f"{name}-push",
            repository=repository(spec),
            image_id=args.image_id,
            opts=pulumi.ResourceOptions(parent=self),
        )
        account = k8s.core.v1.ServiceAccount(
            f"{name}-account", metadata=meta, automount_service_account_token=False, opts=child
        )

        env = []
        if args.api_key is not None:
            secret = k8s.core.v1.Secret(
                f"{name}-api-key",
                metadata={**meta, "name": f"{spec.name}-api-key"},
                type="Opaque",
                string_data={API_KEY_FIELD: pulumi.Output.secret(args.api_key.secret)},
                opts=child,
            )
            env.append(
                {
                    "name": args.api_key.env,
                    "value_from": {"secret_key_ref": {"name": secret.metadata["name"], "key": API_KEY_FIELD}},
                }
            )

        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=meta,
            spec=deployment_spec(spec, args.keys, pushed.image_ref, account.metadata["name"], env),
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    custom_timeouts=pulumi.CustomTimeouts(
                        create=f"{rollout_timeout_s(k)}s", update=f"{rollout_timeout_s(k)}s"
                    )
                ),
            ),
        )
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta,
            spec={"type": k.service_type.value, "selector": selector_labels(spec), "ports": service_ports(spec)},
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[deployment])),
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-disruption-budget",
            metadata=meta,
            spec={"selector": {"match_labels": selector_labels(spec)}, **k.disruption_budget.effective},
            opts=child,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-network-policy", metadata=meta, spec=network_policy_spec(spec), opts=child
        )
        if k.autoscaling is not None:
            k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{name}-autoscaler", metadata=meta, spec=autoscaler_spec(spec), opts=child
            )

        self.outputs = {
            "endpoint": deployment.metadata.apply(lambda _: cluster_endpoint(spec)),
            "base_url": deployment.metadata.apply(lambda _: cluster_base_url(spec)),
            "version": pushed.digest,
            "image_digest": pushed.digest,
            "image_ref": pushed.image_ref,
            "replicas": deployment.status.apply(
                lambda s: (
                    int((s or {}).get("ready_replicas") or 0)
                    if isinstance(s, dict)
                    else int(getattr(s, "ready_replicas", 0) or 0)
                )
            ),
            "namespace": pulumi.Output.from_input(k.namespace),
            "service": service.metadata.apply(lambda m: m["name"] if isinstance(m, dict) else m.name),
        }
        grpc_target = cluster_grpc_address(spec)
        if grpc_target is not None:  # the V2 gRPC service's host:port inside the cluster, as gRPC clients take it
            self.outputs["grpc_target"] = deployment.metadata.apply(lambda _: grpc_target)
        self.register_outputs(self.outputs)


def rollout_timeout_s(k: KubernetesDeploy) -> int:
    """How long the provider waits for a rollout. It reports Kubernetes' ProgressDeadlineExceeded only
    as a warning and keeps waiting, so its own timeout is what fails `pulumi up`: the deadline, plus
    a margin for the API calls."""
    return k.progress_deadline + 30


def grace_period_s() -> int:
    """The preStop delay, then the server's drain on SIGTERM, with a margin."""
    from serving.lifecycle import DRAIN_TIMEOUT_S

    return PRESTOP_DELAY_S + math.ceil(DRAIN_TIMEOUT_S) + DRAIN_MARGIN_S


def content_annotations(keys: ContentKeys) -> dict[str, str]:
    """The pod template carries ModelService's content keys so `pulumi preview --diff` names a model
    change even before the new image's digest is known."""
    return {"modelstack.dev/model-key": keys.model[:16], "modelstack.dev/image-key": keys.image[:16]}


def container_security() -> dict:
    """The restricted Pod Security Standard, and a read-only root filesystem."""
    return {
        "run_as_non_root": True,
        "run_as_user": SERVING_UID,
        "run_as_group": SERVING_UID,
        "allow_privilege_escalation": False,
        "read_only_root_filesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccomp_profile": {"type": "RuntimeDefault"},
    }


def deployment_spec(
    spec: ResolvedSpec,
    keys: ContentKeys,
    image: pulumi.Input[str],
    account: pulumi.Input[str],
    env: list[dict[str, Any]],
) -> dict[str, Any]:
    k = settings(spec)

    def probe(path: str, failures: int, period: int = PROBE_PERIOD_S) -> dict:
        return {
            "http_get": {"path": path, "port": "http"},
            "period_seconds": period,
            "timeout_seconds": 2,
            "failure_threshold": failures,
        }

    container = {
        "name": "model",
        "image": image,
        "image_pull_policy": "IfNotPresent",
        "ports": [{"name": name, "container_port": number, "protocol": "TCP"} for name, number in serving_ports(spec)],
        "env": env or None,
        "resources": {
            "requests": {"cpu": k.resources.requests.cpu, "memory": k.resources.requests.memory},
            "limits": {"cpu": k.resources.limits.cpu, "memory": k.resources.limits.memory},
        },
        # Ready once the model is loaded and warmed up; restarted when the process stops answering;
        # the startup probe holds liveness off while a slow model loads.
        "readiness_probe": probe("/readyz", failures=2),
        "liveness_probe": probe("/healthz", failures=3, period=10),
        "startup_probe": probe("/readyz", failures=max(1, math.ceil(k.startup_timeout / PROBE_PERIOD_S))),
        "lifecycle": {"pre_stop": {"sleep": {"seconds": PRESTOP_DELAY_S}}},
        "security_context": container_security(),
        "volume_mounts": [{"name": "tmp", "mount_path": "/tmp"}],
    }
    pod = {
        "service_account_name": account,
        "automount_service_account_token": False,
        "enable_service_links": False,
        "termination_grace_period_seconds": grace_period_s(),
        "security_context": {
            "run_as_non_root": True,
            "run_as_user": SERVING_UID,
            "run_as_group": SERVING_UID,
            "seccomp_profile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "empty_dir": {"medium": "Memory", "size_limit": TMP_SIZE}}],
        "node_selector": dict(k.node_selector) or None,
        "tolerations": [t.model_dump(exclude_none=True) for t in k.tolerations] or None,
    }
    body = {
        "selector": {"match_labels": selector_labels(spec)},
        "strategy": {"type": "RollingUpdate", "rolling_update": {"max_unavailable": 0, "max_surge": "25%"}},
        "progress_deadline_seconds": k.progress_deadline,
        "revision_history_limit": 5,
        "template": {
            "metadata": {"labels": object_labels(spec), "annotations": {**k.annotations, **content_annotations(keys)}},
            "spec": pod,
        },
    }
    if k.autoscaling is None:  # with autoscaling the HPA owns the count
        body["replicas"] = k.replicas
    return body


def serving_ports(spec: ResolvedSpec) -> list[tuple[str, int]]:
    """The server's ports by name: HTTP, and the V2 gRPC service unless ``serving.grpc_port`` is null."""
    serving = spec.spec.serving
    return [("http", serving.port)] + ([("grpc", serving.grpc_port)] if serving.grpc_port is not None else [])


def service_ports(spec: ResolvedSpec) -> list[dict]:
    """The Service's ports, one per serving port; gRPC is marked as cleartext HTTP/2 for meshes and gateways."""
    return [
        {
            "name": name,
            "port": number,
            "target_port": name,
            "protocol": "TCP",
            **({"app_protocol": "kubernetes.io/h2c"} if name == "grpc" else {}),
        }
        for name, number in serving_ports(spec)
    ]


def network_policy_spec(spec: ResolvedSpec) -> dict:
    """Ingress only to the serving ports; no egress at all (the server calls nothing)."""
    return {
        "pod_selector": {"match_labels": selector_labels(spec)},
        "policy_types": ["Ingress", "Egress"],
        "ingress": [{"ports": [{"port": number, "protocol": "TCP"} for _, number in serving_ports(spec)]}],
        "egress": [],
    }


def autoscaler_spec(spec: ResolvedSpec) -> dict:
    a = settings(spec).autoscaling
    if a is None:
        raise ValueError("autoscaler_spec needs deploy.kubernetes.autoscaling")
    return {
        "scale_target_ref": {"api_version": "apps/v1", "kind": "Deployment", "name": spec.name},
        "min_replicas": a.min_replicas,
        "max_replicas": a.max_replicas,
        "metrics": [
            {
                "type": "Resource",
                "resource": {
                    "name": "cpu",
                    "target": {"type": "Utilization", "average_utilization": a.cpu_utilization},
                },
            }
        ],
    }

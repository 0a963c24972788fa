"""The Kubernetes target: the image pushed by digest ▶ Deployment, Service, PDB, HPA, NetworkPolicy (pulumi-kubernetes).

With a canary or shadow rollout (`deploy.rollout.strategy`) the Service users call selects an nginx proxy
(`proxy.py`) in front of a stable and a candidate Service, and the pod the Deployment runs is the one
the judged `Rollout` (`canary.py`) chose: the new version's once it passed every step, else the old one's
(its image and its other settings alike)."""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any

import pulumi
import pulumi_kubernetes as k8s

from iac.deploy.needs import model_needs, read_timeout_s
from iac.deploy.rollout.progress import follow
from iac.deploy.rollout.steps import refuse_rolled_back
from iac.deploy.targets import ContentKeys, TargetArgs
from iac.deploy.targets.kubernetes import proxy
from iac.deploy.targets.kubernetes.canary import Rollout, Settle, version_of
from iac.deploy.targets.kubernetes.push import Push
from iac.deploy.targets.kubernetes.rolled_out import RolledOut, refuse_stuck
from iac.deploy.targets.kubernetes.settings import (
    PRESTOP_DELAY_S,
    TMP_SIZE,
    cluster_access,
    cluster_base_url,
    cluster_endpoint,
    cluster_grpc_address,
    grace_period_s,
    kubeconfig_path,
    object_labels,
    pod_resources,
    repository,
    selector_labels,
    settings,
)
from iac.spec.errors import UserError
from iac.spec.models import KubernetesDeploy, ResolvedSpec
from modelprep.cache import default_root

if TYPE_CHECKING:
    from modelprep.family import ServingNeeds

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

        judge = proxy.judged(spec)
        rollout, front = None, None
        try:  # memory and drain follow from what the prepped model needs, when its family says
            needs = model_needs(spec, args.keys.model)
            body = deployment_spec(spec, args.keys, pushed.image_ref, account.metadata["name"], env, needs)
        except UserError as exc:
            raise pulumi.RunError(str(exc)) from None  # one located line, no traceback
        if judge:  # canary or shadow: the proxy in front, the stable pod chosen by the judged Rollout
            rollout, front = self._judged(name, spec, args, body["template"], needs, child)
            body["template"] = {
                "metadata": {
                    **body["template"]["metadata"],
                    "annotations": with_annotations(spec, rollout.stable_keys),
                },
                "spec": rollout.stable_pod,
            }

        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=meta,
            spec=body,
            opts=pulumi.ResourceOptions.merge(
                child,
                pulumi.ResourceOptions(
                    custom_timeouts=pulumi.CustomTimeouts(
                        create=f"{rollout_timeout_s(k)}s", update=f"{rollout_timeout_s(k)}s"
                    )
                ),
            ),
        )
        rolled_out = RolledOut(
            f"{name}-rolled-out",
            props={
                **cluster_access(spec),
                "name": spec.name,
                "generation": deployment.metadata.apply(_generation),
                "timeout_s": rollout_timeout_s(k),
            },
            opts=pulumi.ResourceOptions(parent=self, depends_on=[deployment]),
        )
        # The Service users call: the model pods, or with a judged rollout the proxy in front of them.
        service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta,
            spec={
                "type": k.service_type.value,
                "selector": proxy.proxy_selector(spec) if judge else selector_labels(spec),
                "ports": service_ports(spec),
            },
            opts=pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[front or rolled_out])),
        )
        settled = None
        if rollout is not None:
            settled = Settle(
                f"{name}-settle",
                props={**self._access, "stable_image": rollout.stable_image},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[rolled_out, service]),
            )
            follow(self._log_dir, rollout.stable_image)  # step, weight and live figures as the rollout goes
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
            **({"last_rollout": rollout.last_rollout} if rollout is not None else {}),
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
        if rollout is not None and settled is not None:
            # `up` fails with the rollback's line only once every other resource and output is done: the
            # SDK stops at the first failed output, and what is still pending then (the stack's outputs,
            # `last_rollout` among them) would not be written.
            version = pushed.digest.apply(lambda d: version_of(f"@{d}"))
            done = pulumi.Output.all(settled.id, *self.outputs.values())
            pulumi.Output.all(rollout.last_rollout, version, done).apply(lambda v: refuse_rolled_back(v[0], v[1]))
        pulumi.Output.all(rolled_out.problem, *self.outputs.values()).apply(lambda v: refuse_stuck(v[0]))
        self.register_outputs(self.outputs)

    def _judged(
        self,
        name: str,
        spec: ResolvedSpec,
        args: TargetArgs,
        template: dict[str, Any],
        needs: ServingNeeds | None,
        child: pulumi.ResourceOptions,
    ) -> tuple[Rollout, k8s.apps.v1.Deployment]:
        """The stable and candidate Services, the proxy (image, ConfigMap, Deployment) and the Rollout that
        judges the new version's pod `template` through it (`canary.py`, `proxy.py`)."""
        k = settings(spec)
        labels = object_labels(spec)

        def service(role: str, selector: dict[str, str]) -> k8s.core.v1.Service:
            return k8s.core.v1.Service(
                f"{name}-{role}-service",
                metadata={"name": f"{spec.name}-{role}", "namespace": k.namespace, "labels": labels},
                spec={"type": "ClusterIP", "selector": selector, "ports": service_ports(spec)},
                opts=child,
            )

        stable = service("stable", selector_labels(spec))
        candidate = service("candidate", proxy.candidate_selector(spec))
        files = stable.spec.apply(
            lambda s: proxy.proxy_files(
                spec, s["cluster_ip"] if isinstance(s, dict) else s.cluster_ip, read_timeout_s(needs)
            )
        )
        config = k8s.core.v1.ConfigMap(
            f"{name}-proxy-config",
            metadata={"name": proxy.proxy_name(spec), "namespace": k.namespace, "labels": proxy.proxy_labels(spec)},
            data=files,
            opts=child,
        )
        image = Push(
            f"{name}-proxy-push",
            repository=f"{k.registry}/{proxy.PROXY_IMAGE.partition(':')[0]}",
            image_id=proxy.PROXY_IMAGE,
            opts=pulumi.ResourceOptions(parent=self),
        )
        front = k8s.apps.v1.Deployment(
            f"{name}-proxy",
            metadata={"name": proxy.proxy_name(spec), "namespace": k.namespace, "labels": proxy.proxy_labels(spec)},
            spec=proxy.deployment_spec(
                spec,
                image.image_ref,
                config.metadata["name"],
                files.apply(lambda f: hashlib.sha256(json.dumps(f, sort_keys=True).encode()).hexdigest()[:16]),
                proxy.grace_period_s(read_timeout_s(needs)),  # a request it holds may take that long
            ),
            opts=child,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-proxy-network-policy",
            metadata={"name": proxy.proxy_name(spec), "namespace": k.namespace, "labels": proxy.proxy_labels(spec)},
            spec=proxy.network_policy_spec(spec),
            opts=child,
        )
        template = {**template, "metadata": {**template["metadata"], "labels": proxy.candidate_labels(spec)}}
        self._log_dir = str(default_root() / "rollout" / f"{pulumi.get_project()}--{pulumi.get_stack()}--{spec.name}")
        self._access = {
            **cluster_access(spec),
            # Deployments, and the Services the proxy sends to (the one users call selects the proxy itself)
            "names": {"stable": spec.name, "candidate": proxy.candidate_name(spec), "proxy": proxy.proxy_name(spec)},
            "services": {"stable": proxy.stable_name(spec), "candidate": proxy.candidate_name(spec)},
            "selectors": {
                "stable": selector_labels(spec),
                "candidate": proxy.candidate_selector(spec),
                "proxy": proxy.proxy_selector(spec),
            },
            "port": spec.spec.serving.port,
        }
        rollout = Rollout(
            f"{name}-rollout",
            props={
                **self._access,
                "image_ref": template["spec"]["containers"][0]["image"],
                "keys": content_annotations(args.keys),
                "template": template,
                "labels": proxy.candidate_labels(spec),
                "plan": spec.spec.deploy.rollout.model_dump(mode="json"),
                "metric": spec.spec.optimize.metric.value,
                "model_name": spec.name,
                "api_key": args.api_key.secret if args.api_key is not None else "",
                "ready_timeout_s": k.progress_deadline,
                "log_dir": self._log_dir,
            },
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[front, candidate, stable], additional_secret_outputs=["api_key"]
            ),
        )
        return rollout, front


def _generation(meta: Any) -> int:
    return int((meta.get("generation") if isinstance(meta, dict) else getattr(meta, "generation", 0)) or 0)


def rollout_timeout_s(k: KubernetesDeploy) -> int:
    """How long the provider waits for a rollout. It reports Kubernetes' ProgressDeadlineExceeded only
    as a warning and keeps waiting, so its own timeout is what fails `pulumi up`: the deadline, plus
    a margin for the API calls."""
    return k.progress_deadline + 30


def content_annotations(keys: ContentKeys) -> dict[str, str]:
    """The pod template carries ModelService's content keys so `pulumi preview --diff` names a model
    change even before the new image's digest is known."""
    return {"modelstack.dev/model-key": keys.model[:16], "modelstack.dev/image-key": keys.image[:16]}


def with_annotations(spec: ResolvedSpec, content: pulumi.Input[dict[str, str]]) -> pulumi.Output[dict[str, str]]:
    """The pods' annotations: the spec's own and the content keys of the version they run."""
    own = settings(spec).annotations
    return pulumi.Output.from_input(content).apply(lambda keys_: {**own, **keys_})


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
    needs: ServingNeeds | None = None,
) -> dict[str, Any]:
    """The model pods, carrying `keys` (with a judged rollout the Rollout's choice replaces the template);
    `needs`: what the model's family says a replica needs (memory, drain), else the spec as written."""
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
        "resources": pod_resources(spec, needs),
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
        "termination_grace_period_seconds": grace_period_s(needs),
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
            "metadata": {
                "labels": object_labels(spec),
                "annotations": with_annotations(spec, content_annotations(keys)),
            },
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
    pods: dict[str, Any] = {"match_labels": selector_labels(spec)}
    if proxy.judged(spec):  # the candidate's pods too (another instance label)
        pods = {
            "match_labels": {"app.kubernetes.io/name": spec.name},
            "match_expressions": [
                {
                    "key": "app.kubernetes.io/instance",
                    "operator": "In",
                    "values": [spec.name, proxy.candidate_name(spec)],
                }
            ],
        }
    return {
        "pod_selector": pods,
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

"""The resources the Kubernetes target declares, under Pulumi mocks (no engine, no cluster, no Docker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pulumi
import pytest
from pulumi.runtime.mocks import MockResourceArgs, Mocks
from specs import KWOK_PLACEMENT, kubernetes_deploy, write_kubernetes_spec

from iac.deploy.targets import ContentKeys

# How a Pulumi secret travels on the wire: a signature key beside the value.
SECRET_SIG, SECRET_VALUE = "4dabf18193072939515e22adb298388d", "1b47061264138c4ac30d75fd1eb44270"
KEYS = ContentKeys(model="m" * 64, image="i" * 64)  # what ModelService computes once and hands every target


class K8sMocks(Mocks):
    def __init__(self) -> None:
        self.resources: dict[str, tuple[str, dict[str, Any]]] = {}

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict]:
        self.resources[args.name] = (args.typ, args.inputs)
        outs = dict(args.inputs)
        if args.name.endswith("-push"):
            outs.update(image_ref=f"{args.inputs['repository']}@sha256:{'d' * 64}", digest="sha256:" + "d" * 64)
        elif args.typ == "kubernetes:apps/v1:Deployment":
            outs["status"] = {"readyReplicas": 3}
        return f"{args.name}-id", outs

    def call(self, args: Any) -> tuple[dict, None]:
        return {}, None


def _graph(folder: Path, serving: dict[str, Any] | None = None, **settings: Any) -> tuple[K8sMocks, dict[str, Any]]:
    """The target alone, handed what ModelService hands it (the shared artifact and image are the Docker
    target's tests' business)."""
    from iac.deploy.service import api_key_of
    from iac.deploy.targets import TargetArgs, target_of
    from iac.spec.load import load_resolved

    changes = {"serving": serving} if serving else {}
    deploy = kubernetes_deploy("127.0.0.1:5000/ml", "kubeconfig", "models", **settings)
    spec = load_resolved(write_kubernetes_spec(folder, deploy, **changes))
    mocks = K8sMocks()
    pulumi.runtime.set_mocks(mocks, project="digits", stack="dev", preview=False)
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def build() -> pulumi.Output:
        args = TargetArgs(
            spec,
            "digits/dev/digits",
            "modelstack-dev-digits",
            pulumi.Output.from_input("sha256:" + "1" * 64),
            pulumi.Output.from_input("a" * 64),
            KEYS,
            api_key_of(spec, pulumi.Output.secret("s3cret")),
        )
        target = target_of(spec).deploy("digits", args, pulumi.ResourceOptions())
        names = list(target.outputs)
        return pulumi.Output.all(*target.outputs.values()).apply(lambda values: resolved.update(zip(names, values)))

    build()
    return mocks, resolved


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    folder = tmp_path / "digits"
    (folder / "model").mkdir(parents=True)
    (folder / "data").mkdir()
    (folder / "model" / "digits.keras").write_bytes(b"placeholder: never loaded by these tests")
    np.savez(folder / "data" / "calibration.npz", x=np.zeros((4, 64), np.float32))
    np.savez(folder / "data" / "evaluation.npz", x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
    (folder / "kubeconfig").write_text("apiVersion: v1\nkind: Config\n")
    return folder


def _of(mocks: K8sMocks, typ: str) -> dict[str, Any]:
    found = [inputs for t, inputs in mocks.resources.values() if t == typ]
    assert len(found) == 1, (typ, sorted(t for t, _ in mocks.resources.values()))
    return found[0]


def test_restricted_pods_pulled_by_digest(folder: Path) -> None:
    mocks, outputs = _graph(folder, replicas=3, **KWOK_PLACEMENT)
    deployment = _of(mocks, "kubernetes:apps/v1:Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 3 and spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False and pod["serviceAccountName"] == "digits"
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["nodeSelector"] == {"type": "kwok"} and pod["tolerations"][0]["operator"] == "Exists"
    assert pod["terminationGracePeriodSeconds"] > 5 + 9  # preStop delay + the server's drain
    (container,) = pod["containers"]
    assert container["image"] == f"127.0.0.1:5000/ml/digits@sha256:{'d' * 64}"
    assert container["securityContext"] == {
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 120
    assert container["lifecycle"]["preStop"] == {"sleep": {"seconds": 5}}
    assert container["resources"] == {
        "requests": {"cpu": "250m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    annotations = spec["template"]["metadata"]["annotations"]
    assert annotations == {"modelstack.dev/model-key": "m" * 16, "modelstack.dev/image-key": "i" * 16}
    assert outputs["endpoint"] == "http://digits.models.svc.cluster.local:8501/v1/models/digits:predict"
    assert outputs["grpc_target"] == "digits.models.svc.cluster.local:8001"
    assert container["ports"] == [
        {"name": "http", "containerPort": 8501, "protocol": "TCP"},
        {"name": "grpc", "containerPort": 8001, "protocol": "TCP"},
    ]
    assert outputs["image_digest"] == "sha256:" + "d" * 64 and outputs["replicas"] == 3
    assert _of(mocks, "pulumi-python:dynamic/kubernetes:Push")["image_id"] == "sha256:" + "1" * 64


def test_service_budget_policy_account(folder: Path) -> None:
    mocks, _ = _graph(
        folder, service_type="NodePort", labels={"team": "ml"}, disruption_budget={"min_available": "50%"}
    )
    service = _of(mocks, "kubernetes:core/v1:Service")
    assert service["spec"]["type"] == "NodePort"
    assert service["spec"]["ports"] == [  # HTTP, and the V2 gRPC service (serving.grpc_port, 8001 by default)
        {"name": "http", "port": 8501, "targetPort": "http", "protocol": "TCP"},
        {"name": "grpc", "port": 8001, "targetPort": "grpc", "protocol": "TCP", "appProtocol": "kubernetes.io/h2c"},
    ]
    assert service["metadata"]["labels"]["team"] == "ml"
    assert _of(mocks, "kubernetes:policy/v1:PodDisruptionBudget")["spec"]["minAvailable"] == "50%"
    policy = _of(mocks, "kubernetes:networking.k8s.io/v1:NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["egress"] == []
    assert policy["ingress"] == [{"ports": [{"port": 8501, "protocol": "TCP"}, {"port": 8001, "protocol": "TCP"}]}]
    assert _of(mocks, "kubernetes:core/v1:ServiceAccount")["automountServiceAccountToken"] is False
    assert not [t for t, _ in mocks.resources.values() if "HorizontalPodAutoscaler" in t]
    assert not [t for t, _ in mocks.resources.values() if t == "kubernetes:core/v1:Secret"]


def test_grpc_off_leaves_only_http(folder: Path) -> None:
    mocks, outputs = _graph(folder, serving={"port": 8501, "threads": 1, "grpc_port": None})
    assert [p["name"] for p in _of(mocks, "kubernetes:core/v1:Service")["spec"]["ports"]] == ["http"]
    (container,) = _of(mocks, "kubernetes:apps/v1:Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 8501, "protocol": "TCP"}]
    assert "grpc_target" not in outputs


def test_autoscaling_owns_the_replica_count(folder: Path) -> None:
    mocks, _ = _graph(folder, autoscaling={"min_replicas": 2, "max_replicas": 8, "cpu_utilization": 60})
    hpa = _of(mocks, "kubernetes:autoscaling/v2:HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 8)
    assert hpa["metrics"][0]["resource"]["target"] == {"type": "Utilization", "averageUtilization": 60}
    assert "replicas" not in _of(mocks, "kubernetes:apps/v1:Deployment")["spec"]


def test_api_key_reaches_pods_from_a_secret(folder: Path) -> None:
    mocks, _ = _graph(folder, serving={"port": 8501, "threads": 1, "api_key_env": "MODELSTACK_API_KEY"})
    data = _of(mocks, "kubernetes:core/v1:Secret")["stringData"]
    assert data.get(SECRET_SIG) == SECRET_VALUE, "the key stays a Pulumi secret"
    assert data["value"] == {"api-key": "s3cret"}
    (container,) = _of(mocks, "kubernetes:apps/v1:Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["env"] == [
        {"name": "MODELSTACK_API_KEY", "valueFrom": {"secretKeyRef": {"name": "digits-api-key", "key": "api-key"}}}
    ]

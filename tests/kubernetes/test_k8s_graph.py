"""The resources the Kubernetes target declares, under Pulumi mocks (no engine, no cluster, no Docker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pulumi
import pytest
from pulumi.runtime.mocks import MockResourceArgs, Mocks
from pulumi_mocks import use_mocks
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
        elif args.typ == "kubernetes:core/v1:Service":
            outs["spec"] = {**args.inputs["spec"], "clusterIP": f"10.96.0.{len(self.resources)}"}
        elif args.name.endswith("-rollout"):  # as on a first `up`: the pushed image is the stable one
            stable = {"stable_image": args.inputs["image_ref"], "stable_keys": args.inputs["keys"]}
            outs.update(stable, stable_pod=args.inputs["template"]["spec"])
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
    use_mocks(mocks)
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


CANARY = {"strategy": "canary", "steps": [{"weight": 10, "hold": 5}, {"weight": 50, "hold": 5}]}


def test_canary_puts_the_proxy_in_front_of_a_stable_and_a_candidate_service(folder: Path) -> None:
    """No mesh: the Service users call selects nginx pods (the Docker target's proxy and nginx.conf), which
    send to the stable Service's cluster IP; the stable Deployment runs the image the Rollout chose."""
    mocks, outputs = _graph(folder, replicas=2, rollout=CANARY)
    services = {
        inputs["metadata"]["name"]: inputs["spec"]
        for typ, inputs in mocks.resources.values()
        if typ == "kubernetes:core/v1:Service"
    }
    assert services["digits"]["selector"] == {
        "app.kubernetes.io/name": "digits-proxy",
        "app.kubernetes.io/instance": "digits-proxy",
    }
    assert services["digits-stable"]["selector"]["app.kubernetes.io/instance"] == "digits"
    assert services["digits-candidate"]["selector"]["app.kubernetes.io/instance"] == "digits-candidate"
    config = _of(mocks, "kubernetes:core/v1:ConfigMap")["data"]
    assert "split_clients" in config["split.conf"] and "model_candidate" not in config["split.conf"]
    assert config["upstream.conf"].startswith("server 10.96.0.") and ":8501 " in config["upstream.conf"]
    assert "include /etc/modelstack/split.conf;" in config["nginx.conf"]
    deployments = {
        inputs["metadata"]["name"]: inputs["spec"]
        for typ, inputs in mocks.resources.values()
        if typ == "kubernetes:apps/v1:Deployment"
    }
    (nginx,) = deployments["digits-proxy"]["template"]["spec"]["containers"]
    assert nginx["image"] == f"127.0.0.1:5000/ml/modelstack-proxy@sha256:{'d' * 64}"
    assert nginx["securityContext"]["runAsUser"] == 33 and nginx["securityContext"]["readOnlyRootFilesystem"]
    assert "-s quit" in nginx["lifecycle"]["preStop"]["exec"]["command"][-1]
    (model,) = deployments["digits"]["template"]["spec"]["containers"]
    assert model["image"] == f"127.0.0.1:5000/ml/digits@sha256:{'d' * 64}"  # the Rollout's stable pod
    assert model["resources"]["limits"] == {"cpu": "1", "memory": "512Mi"}  # written as the API takes it
    assert model["securityContext"]["readOnlyRootFilesystem"] is True
    rollout = next(inputs for name, (_, inputs) in mocks.resources.items() if name.endswith("-rollout"))
    assert rollout["template"]["metadata"]["labels"]["app.kubernetes.io/instance"] == "digits-candidate"
    assert rollout["plan"]["strategy"] == "canary" and "last_rollout" in outputs
    # The proxy sends to the stable Service, never to the Service users call (which selects the proxy)
    assert rollout["services"] == {"stable": "digits-stable", "candidate": "digits-candidate"}
    policies = {
        inputs["metadata"]["name"]: inputs["spec"]
        for typ, inputs in mocks.resources.values()
        if typ == "kubernetes:networking.k8s.io/v1:NetworkPolicy"
    }
    assert policies["digits"]["podSelector"]["matchExpressions"][0]["values"] == ["digits", "digits-candidate"]
    # The proxy pods: requests in on their own ports, out only to the model's pods (both versions).
    front = policies["digits-proxy"]
    assert front["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "digits-proxy"
    assert [p["port"] for p in front["ingress"][0]["ports"]] == [8080, 8081]
    assert front["egress"] == [
        {
            "to": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "digits"}}}],
            "ports": [{"port": 8501, "protocol": "TCP"}, {"port": 8001, "protocol": "TCP"}],
        }
    ]


def test_the_candidate_template_is_written_as_the_api_takes_it() -> None:
    from iac.deploy.targets.kubernetes.canary import k8s_json

    template = {
        "metadata": {"labels": {"team_a": "x"}, "annotations": {"modelstack.dev/model-key": "m"}},
        "spec": {
            "termination_grace_period_seconds": 20.0,
            "node_selector": {"disk_type": "ssd"},
            "containers": [{"readiness_probe": {"http_get": {"path": "/readyz", "port": "http"}}, "env": None}],
        },
    }
    assert k8s_json(template) == {
        "metadata": {"labels": {"team_a": "x"}, "annotations": {"modelstack.dev/model-key": "m"}},
        "spec": {
            "terminationGracePeriodSeconds": 20,
            "nodeSelector": {"disk_type": "ssd"},
            "containers": [{"readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}}}],
        },
    }


def test_a_step_routes_by_request_weight_or_mirrors() -> None:
    from iac.deploy.targets.kubernetes.proxy import resting_files, step_files

    canary = step_files("canary", 10, "10.96.0.9", 8501)
    assert "10% model_candidate;" in canary["split.conf"] and "POST 1;" in canary["split.conf"]
    assert canary["upstream-candidate.conf"].startswith("server 10.96.0.9:8501")
    assert "mirror" not in canary["mirror.conf"].split("#")[0]
    shadow = step_files("shadow", 50, "10.96.0.9", 8501)
    assert "model_candidate" not in shadow["split.conf"] and "50% 1;" in shadow["split.conf"]
    assert shadow["mirror.conf"] == "mirror /_shadow;\n"
    assert (
        "model_candidate" not in resting_files()["split.conf"] and "down" in resting_files()["upstream-candidate.conf"]
    )


class FakeCluster:
    """What ClusterVersions asks of the API: pods by label, proxied GETs, execs (recorded)."""

    namespace = "models"

    def __init__(self) -> None:
        self.pods = {"stable": ["s-0", "s-1"], "candidate": ["c-0"], "proxy": ["p-0", "p-1"]}
        self.runs: list[tuple[str, list[str]]] = []

    def ready_pods(self, labels: dict[str, str]) -> list[str]:
        return self.pods[labels["role"]]

    @property
    def core(self) -> Any:
        from types import SimpleNamespace

        ips = {"digits-stable": "10.96.0.5", "digits-candidate": "10.96.0.6"}
        service = lambda name, _: SimpleNamespace(spec=SimpleNamespace(cluster_ip=ips[name]))  # noqa: E731
        return SimpleNamespace(read_namespaced_service=service)

    def request(self, pod: str, port: int, path: str, **_: Any) -> bytes:
        count = 7 if pod.startswith("s") else 3
        return (
            f'modelstack_requests_total{{route="v1_predict",status="200"}} {count}\n'
            f'modelstack_requests_total{{route="v1_predict",status="500"}} 1\n'
        ).encode()

    def run(self, pod: str, container: str, command: list[str]) -> tuple[int, str]:
        self.runs.append((pod, command))
        return 0, '{"uri":"/v1/models/digits:predict","body":"{}"}\n'


def test_cluster_versions_reconfigure_every_proxy_pod_and_sum_every_replica() -> None:
    from iac.deploy.targets.kubernetes.canary import ClusterVersions

    cluster = FakeCluster()
    props = {
        "port": 8501.0,
        "names": {"candidate": "digits-candidate", "stable": "digits"},
        "services": {"candidate": "digits-candidate", "stable": "digits-stable"},
        "selectors": {role: {"role": role} for role in ("stable", "candidate", "proxy")},
    }
    versions = ClusterVersions(cluster, props)  # type: ignore[arg-type]
    versions.back_to_stable()
    assert [pod for pod, _ in cluster.runs] == ["p-0", "p-1"]
    pod, command = cluster.runs[0]
    script, files = command[2], command[4:]
    assert script.startswith("set -e; ") and script.endswith("nginx -c /etc/modelstack/nginx.conf -s reload")
    assert "mv /etc/modelstack/.split.conf /etc/modelstack/split.conf" in script
    assert len(files) == 4 and any("split_clients" in f for f in files)  # contents as arguments, never quoted
    assert "server 10.96.0.5:8501" in files[-1]  # upstream.conf, sorted last: the stable Service
    versions.promote()
    assert "server 10.96.0.6:8501" in cluster.runs[-1][1][-1]  # the candidate is the main upstream
    stable, candidate = versions.scrape(False), versions.scrape(True)
    assert (stable.requests, stable.errors) == (16, 2) and (candidate.requests, candidate.errors) == (4, 1)
    assert len(versions.take_log(400)) == 2  # one logged request from each proxy pod


def test_a_rolled_back_version_leaves_the_stable_pod_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Rollout's outputs after each outcome: the stable Deployment runs `stable_pod`, so a rejected
    version's other settings (a lower CPU limit, say) stay out of it as well as its image."""
    from types import SimpleNamespace

    from iac.deploy.targets.kubernetes import canary

    def pod(image: str, cpu: str) -> dict[str, Any]:
        return {"containers": [{"image": image, "resources": {"limits": {"cpu": cpu}}}]}

    outcome = {"outcome": "rolled back"}
    cluster = SimpleNamespace(ready_pods=lambda labels: ["p"])
    monkeypatch.setattr(canary.Cluster, "of", classmethod(lambda cls, props: cluster))
    monkeypatch.setattr(canary, "_judge", lambda cluster, props: dict(outcome))
    selectors = {"selectors": {"stable": {}, "proxy": {}}}
    olds = {**selectors, "image_ref": "old", "stable_image": "old", "stable_keys": {}, "stable_pod": pod("old", "1")}
    news = {**selectors, "image_ref": "new", "keys": {"k": "n"}, "template": {"spec": pod("new", "750m")}}
    provider = canary.RolloutProvider()

    rolled_back = provider.update("id", olds, news).outs
    assert (rolled_back["stable_image"], rolled_back["stable_pod"]) == ("old", pod("old", "1"))
    assert rolled_back["last_rollout"] == outcome
    # A state from before the pod was kept: the new settings with the old image, as such a stack ran.
    legacy = {key: value for key, value in olds.items() if key != "stable_pod"}
    assert provider.diff("id", legacy, {**legacy}).changes
    assert provider.update("id", legacy, news).outs["stable_pod"] == pod("old", "750m")
    outcome["outcome"] = "promoted"
    promoted = provider.update("id", olds, news).outs
    assert (promoted["stable_image"], promoted["stable_pod"]) == ("new", pod("new", "750m"))
    same_image = {**news, "image_ref": "old", "template": {"spec": pod("old", "2")}}
    assert provider.update("id", olds, same_image).outs["stable_pod"] == pod("old", "2")  # rolls, unjudged


def test_rolled_out_is_read_as_kubectl_rollout_status_reads_it() -> None:
    """The check after the provider's await: not done before the controller observed the new template,
    every replica updated and available and no old one left; stuck once the progress deadline passed."""
    from kubernetes.client import (
        V1Deployment,
        V1DeploymentCondition,
        V1DeploymentSpec,
        V1DeploymentStatus,
        V1LabelSelector,
        V1ObjectMeta,
        V1PodTemplateSpec,
    )

    from iac.deploy.targets.kubernetes.rolled_out import rollout_state

    def deployment(generation: int, observed: int, conditions: tuple[str, ...] = (), **counts: int) -> V1Deployment:
        return V1Deployment(
            metadata=V1ObjectMeta(name="digits", generation=generation),
            spec=V1DeploymentSpec(replicas=2, selector=V1LabelSelector(), template=V1PodTemplateSpec()),
            status=V1DeploymentStatus(
                observed_generation=observed,
                conditions=[V1DeploymentCondition(type="Progressing", status="False", reason=r) for r in conditions],
                **counts,
            ),
        )

    # The provider's early "complete": the old status, all available, not yet for this generation.
    assert rollout_state(deployment(3, 2, replicas=2, updated_replicas=2, available_replicas=2)) == "waiting"
    assert rollout_state(deployment(3, 3, replicas=3, updated_replicas=1, available_replicas=2)) == "waiting"
    assert rollout_state(deployment(3, 3, replicas=3, updated_replicas=2, available_replicas=3)) == "waiting"
    assert rollout_state(deployment(3, 3, replicas=2, updated_replicas=2, available_replicas=1)) == "waiting"
    assert rollout_state(deployment(3, 3, replicas=2, updated_replicas=2, available_replicas=2)) == "done"
    stuck = deployment(3, 3, ("ProgressDeadlineExceeded",), replicas=3, updated_replicas=1, available_replicas=2)
    assert rollout_state(stuck) == "stuck"

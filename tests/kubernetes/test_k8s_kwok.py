"""The Kubernetes target on a real control plane with kwok's simulated nodes: what the API holds after
`pulumi up` (restricted pods, budget, autoscaler, network policy), what `preview --diff` shows for a
model change, and a version that never gets ready failing `up` while the old pods stay."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from specs import KWOK_PLACEMENT, kubernetes_deploy

pytestmark = [pytest.mark.k8s, pytest.mark.pulumi, pytest.mark.docker]

NAMESPACE = "models"


@pytest.fixture(scope="module")
def stack(cluster: object, digits_example: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    from harness.k8s.sandbox import K8sSandbox

    deploy = kubernetes_deploy(
        cluster.registry,
        cluster.kubeconfig,
        NAMESPACE,
        replicas=3,
        autoscaling={"min_replicas": 3, "max_replicas": 6, "cpu_utilization": 60},
        disruption_budget={"min_available": 2},
        labels={"team": "ml"},
        progress_deadline=20,
        **KWOK_PLACEMENT,
    )
    with K8sSandbox(tmp_path_factory.mktemp("kwok-stack"), digits_example, deploy).deployed() as stack:
        yield stack


def _apis(cluster: object) -> tuple:
    from kubernetes import client

    api = cluster.api()
    return client.CoreV1Api(api), client.AppsV1Api(api)


def _ready_pods(cluster: object, template_key: str | None = None) -> list[str]:
    core, _ = _apis(cluster)
    pods = core.list_namespaced_pod(NAMESPACE, label_selector="app.kubernetes.io/name=digits").items
    return sorted(
        p.metadata.name
        for p in pods
        if not p.metadata.deletion_timestamp
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        and (template_key is None or p.metadata.annotations.get("modelstack.dev/model-key") == template_key)
    )


def _wait_for(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.5)


def test_pods_are_restricted_and_pulled_by_digest(cluster: object, stack: object) -> None:
    core, apps = _apis(cluster)
    outputs = stack.outputs()
    assert outputs["endpoint"] == f"http://digits.{NAMESPACE}.svc.cluster.local:8501/v1/models/digits:predict"
    assert outputs["image_ref"] == f"{cluster.registry}/digits@{outputs['image_digest']}"
    assert outputs["variant"] and outputs["image_id"].startswith("sha256:")
    deployment = apps.read_namespaced_deployment("digits", NAMESPACE)
    assert deployment.spec.strategy.rolling_update.max_unavailable == 0
    pod = deployment.spec.template.spec
    assert pod.automount_service_account_token is False and pod.service_account_name == "digits"
    (container,) = pod.containers
    assert container.image == outputs["image_ref"]
    sc = container.security_context
    assert (sc.run_as_non_root, sc.run_as_user, sc.allow_privilege_escalation, sc.read_only_root_filesystem) == (
        True,
        10001,
        False,
        True,
    )
    assert sc.capabilities.drop == ["ALL"] and sc.seccomp_profile.type == "RuntimeDefault"
    assert container.readiness_probe.http_get.path == "/readyz" and container.startup_probe.http_get.path == "/readyz"
    assert container.liveness_probe.http_get.path == "/healthz"
    assert container.lifecycle.pre_stop.sleep.seconds == 5 and pod.termination_grace_period_seconds >= 15
    _wait_for(lambda: len(_ready_pods(cluster)) == 3)
    account = core.read_namespaced_service_account("digits", NAMESPACE)
    assert account.automount_service_account_token is False


def test_the_namespace_refuses_pods_that_are_not_restricted(cluster: object, stack: object) -> None:
    from kubernetes.client.exceptions import ApiException

    core, _ = _apis(cluster)
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "root-pod"},
        "spec": {"containers": [{"name": "c", "image": "modelstack-pause:1"}]},
    }
    with pytest.raises(ApiException) as info:
        core.create_namespaced_pod(NAMESPACE, privileged)
    message = json.loads(info.value.body)["message"]
    assert info.value.status == 403 and 'violates PodSecurity "restricted:latest"' in message, message


def test_budget_autoscaler_policy_and_service(cluster: object, stack: object) -> None:
    from kubernetes import client

    api = cluster.api()
    pdb = client.PolicyV1Api(api).read_namespaced_pod_disruption_budget("digits", NAMESPACE)
    assert pdb.spec.min_available == 2 and pdb.spec.selector.match_labels["app.kubernetes.io/name"] == "digits"
    hpa = client.AutoscalingV2Api(api).read_namespaced_horizontal_pod_autoscaler("digits", NAMESPACE)
    assert (hpa.spec.min_replicas, hpa.spec.max_replicas) == (3, 6)
    assert hpa.spec.scale_target_ref.name == "digits"
    assert hpa.spec.metrics[0].resource.target.average_utilization == 60
    policy = client.NetworkingV1Api(api).read_namespaced_network_policy("digits", NAMESPACE)
    assert policy.spec.policy_types == ["Ingress", "Egress"] and not policy.spec.egress
    assert policy.spec.ingress[0].ports[0].port == 8501
    service = client.CoreV1Api(api).read_namespaced_service("digits", NAMESPACE)
    assert service.spec.type == "ClusterIP" and service.metadata.labels["team"] == "ml"


def test_preview_diff_names_the_model_change(stack: object) -> None:
    spec = stack.spec()
    stack.write_spec(optimize={**spec["optimize"], "quantization": "dynamic"})
    try:
        started = time.monotonic()
        out = stack.pulumi("preview", "--diff", "--suppress-progress")
        took = time.monotonic() - started
    finally:
        stack.write_spec(optimize=spec["optimize"])
    assert "modelstack.dev/model-key" in out and "modelstack.dev/image-key" in out
    assert "kubernetes:apps/v1:Deployment" in out and "digits-push" in out
    print(f"preview --diff of a model change: {took:.1f} s")
    back = stack.pulumi("preview", "--diff", "--suppress-progress")
    assert "modelstack.dev/model-key" not in back  # the restored spec is the deployed model


def test_a_version_that_never_gets_ready_fails_up_and_the_old_pods_stay(cluster: object, stack: object) -> None:
    from harness.k8s.cluster import NEVER_READY

    serving = _ready_pods(cluster)
    assert len(serving) == 3
    stack.edit_kubernetes(annotations={NEVER_READY: "true"})
    try:
        started = time.monotonic()
        run = stack.run("up", "--yes", "--skip-preview", "--suppress-progress", check=False)
        took = time.monotonic() - started
        assert run.returncode != 0, run.stdout[-3000:]
        assert "ProgressDeadlineExceeded" in run.stdout or "progress deadline" in run.stdout.lower(), run.stdout[-3000:]
        assert took < 20 + 90, took  # the deadline and the provider's margin, plus the engine's start
        assert _ready_pods(cluster) == serving  # maxUnavailable 0: no old pod was taken down
    finally:
        stack.edit_kubernetes(annotations=None)
    stack.up()
    _wait_for(lambda: len(_ready_pods(cluster)) == 3)
    print(f"never-ready rollout failed after {took:.1f} s")

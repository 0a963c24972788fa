"""The pristine digits example spec, pointed at a Kubernetes cluster (the tests never use stacks/*)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "modelprep" / "examples" / "specs" / "digits.yaml"
KWOK_PLACEMENT: dict[str, Any] = {
    "node_selector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
}


def kubernetes_deploy(registry: str, kubeconfig: str | None, namespace: str, **settings: Any) -> dict[str, Any]:
    k: dict[str, Any] = {"target": "kubernetes", "namespace": namespace, "registry": registry, **settings}
    if kubeconfig is not None:
        k["kubeconfig"] = kubeconfig
    return k


def write_kubernetes_spec(folder: Path, deploy: dict[str, Any], **changes: Any) -> Path:
    """The example spec at folder/model.yaml with its deploy section replaced (and top-level changes,
    e.g. optimize={...}); the model and data files are the caller's."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["deploy"] = deploy
    doc.update(changes)
    path = folder / "model.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def copy_example_files(source: Path, folder: Path) -> None:
    """The trained model and the data files of an example folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for part in ("model", "data"):
        if (folder / part).exists():
            shutil.rmtree(folder / part)
        shutil.copytree(source / part, folder / part)


def one_pod_stack(node: Any, root: Path, example: Path, namespace: str) -> Any:
    """`example` (its model.yaml as written, the deploy section replaced) as one pod on the real node:
    the sandbox, not yet up."""
    from harness.k8s.sandbox import K8sSandbox

    deploy = kubernetes_deploy(
        node.registry, node.kubeconfig, namespace, replicas=1, progress_deadline=180, startup_timeout=120
    )
    (root / "stack").mkdir()
    return K8sSandbox(root / "stack", example, deploy, spec=example / "model.yaml")


def pod_and_needs(node: Any, stack: Any, namespace: str) -> tuple[Any, Any, Any]:
    """The deployed stack's resolved spec, what its model's family says a replica needs, and the pod
    template's spec the cluster holds for it."""
    from kubernetes import client

    from iac.deploy.needs import model_needs
    from iac.spec.load import load_resolved
    from modelprep.request import prep_key, prep_request

    resolved = load_resolved(stack.spec_path)
    needs = model_needs(resolved, prep_key(prep_request(resolved)))
    apps = client.AppsV1Api(node.api())
    return resolved, needs, apps.read_namespaced_deployment(resolved.name, namespace).spec.template.spec

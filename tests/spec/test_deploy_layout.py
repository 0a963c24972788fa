"""`deploy` is one section per target, told apart by `target`: today's Docker specs keep working, the
earlier Kubernetes layout (`deploy.kubernetes.<setting>`) is refused setting by setting with where it
moves, and a setting of the other target is named as such."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from iac.spec.errors import UserError
from iac.spec.load import load, load_resolved, validate
from iac.spec.models import DockerDeploy, KubernetesDeploy, ResolvedSpec

REPO = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = {
    "name": "digits",
    "model": {"path": "model/digits.keras", "inputs": [{"name": "pixels", "shape": [64]}]},
    "data": {"calibration": "data/calibration.npz", "evaluation": "data/evaluation.npz"},
}
# A value each setting of the earlier `deploy.kubernetes` section accepts.
KUBERNETES_SETTINGS: dict[str, Any] = {
    "kubeconfig": "kubeconfig.yaml",
    "context": "local",
    "namespace": "models",
    "registry": "127.0.0.1:5000",
    "replicas": 3,
    "resources": {"requests": {"cpu": "250m", "memory": "128Mi"}},
    "autoscaling": {"max_replicas": 4},
    "disruption_budget": {"min_available": 1},
    "service_type": "NodePort",
    "labels": {"team": "ml"},
    "annotations": {"example.com/owner": "ml"},
    "node_selector": {"type": "kwok"},
    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists"}],
    "startup_timeout": 60,
    "progress_deadline": 120,
}


def _write(folder: Path, deploy: dict[str, Any]) -> Path:
    (folder / "model").mkdir(exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    (folder / "model" / "digits.keras").write_bytes(b"placeholder")
    for name in ("calibration", "evaluation"):
        (folder / "data" / f"{name}.npz").write_bytes(b"placeholder")
    path = folder / "model.yaml"
    path.write_text(yaml.safe_dump({**BASE, "deploy": deploy}, sort_keys=False))
    return path


def _problems(path: Path) -> list[str]:
    with pytest.raises(UserError) as info:
        validate(load(path))
    return [str(p) for p in info.value.problems]


def test_every_kubernetes_setting_is_covered() -> None:
    assert set(KUBERNETES_SETTINGS) == set(KubernetesDeploy.model_fields) - {"target", "base_image", "rollout"}


@pytest.mark.parametrize(
    "spec",
    sorted(REPO.glob("stacks/*/model.yaml")) + sorted((REPO / "modelprep" / "examples" / "specs").glob("*.yaml")),
    ids=lambda p: f"{p.parent.name}/{p.name}",
)
def test_committed_specs_validate_in_the_union(spec: Path) -> None:
    from iac.spec.models import ModelSpec

    deploy = ModelSpec.model_validate(yaml.safe_load(spec.read_text())).deploy
    assert isinstance(deploy, KubernetesDeploy if deploy.target == "kubernetes" else DockerDeploy)


def test_todays_docker_layout_keeps_working(tmp_path: Path) -> None:
    written = {
        "replicas": 2,
        "cpus": 0.5,
        "memory": "256Mi",
        "host_port": 8601,
        "grpc_host_port": 8602,
        "ready_timeout": 30,
    }
    for deploy in ({}, written, {"target": "docker", **written}):
        resolved = load_resolved(_write(tmp_path, deploy))
        assert isinstance(resolved.spec.deploy, DockerDeploy)
        assert resolved.spec.deploy.model_dump(include=set(deploy) - {"target"}) == {
            k: v for k, v in deploy.items() if k != "target"
        }


@pytest.mark.parametrize("setting", sorted(KUBERNETES_SETTINGS))
def test_earlier_kubernetes_layout_names_where_each_setting_moves(setting: str, tmp_path: Path) -> None:
    nested = {"registry": "127.0.0.1:5000", setting: KUBERNETES_SETTINGS[setting]}
    path = _write(tmp_path, {"target": "kubernetes", "kubernetes": nested})
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.startswith(f"    {setting}:"))
    problems = _problems(path)
    assert (
        f"model.yaml:{line}: deploy.kubernetes.{setting}: the kubernetes target's settings now sit directly "
        f"under deploy; move {setting} up one level, to deploy.{setting}, then remove the line `kubernetes:`"
        in problems
    ), problems
    assert all("deploy.kubernetes." in p for p in problems), "only the move is reported, not what follows from it"


def test_moved_spec_resolves_to_the_same_settings(tmp_path: Path) -> None:
    resolved = load_resolved(_write(tmp_path, {"target": "kubernetes", **KUBERNETES_SETTINGS}))
    assert isinstance(resolved.spec.deploy, KubernetesDeploy)
    assert (
        resolved.spec.deploy.model_dump(mode="json", include=set(KUBERNETES_SETTINGS), exclude_unset=True)
        == KUBERNETES_SETTINGS
    )


@pytest.mark.parametrize("setting", sorted(set(DockerDeploy.model_fields) - set(KubernetesDeploy.model_fields)))
def test_a_docker_setting_under_kubernetes_is_named_as_such(setting: str, tmp_path: Path) -> None:
    value = DockerDeploy.model_fields[setting].default
    path = _write(
        tmp_path,
        {
            "target": "kubernetes",
            "registry": "127.0.0.1:5000",
            setting: str(value) if setting == "bind_address" else (value or 8001),
        },
    )
    (problem,) = _problems(path)
    assert (
        f"deploy.{setting}: is a setting of target docker, not kubernetes; remove it, or set target: docker" in problem
    )


def test_spec_round_trips_through_state_json(tmp_path: Path) -> None:
    """Pulumi state keeps the resolved spec as JSON; both sections come back as themselves."""
    for deploy in ({"replicas": 2}, {"target": "kubernetes", "registry": "127.0.0.1:5000"}):
        resolved = load_resolved(_write(tmp_path, deploy))
        assert ResolvedSpec.model_validate(resolved.model_dump(mode="json")) == resolved


def test_a_deploy_section_that_is_no_mapping_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, {})
    path.write_text(path.read_text().replace("deploy: {}", "deploy: 5"))
    assert _problems(path) == [
        f"model.yaml:{len(path.read_text().splitlines())}: deploy: 5 is not a mapping of settings; "
        "write target: one of docker, kubernetes, and its settings"
    ]

"""Deploy targets: where the built image runs. One package per target, each implementing `DeployTarget`.

`ModelService` (iac/deploy/service.py) builds what every target shares (the artifact, the image, the
content keys, the checked API key) and hands it over as `TargetArgs`; a target turns that into running
replicas and answers `modelstack status`. Adding a target means a package here with a `TARGET` object
(a `DeployTarget`, usually a `PackageTarget` of the package's settings, status and `target.Target`), its
name in `TARGETS`, and its section in the spec's `deploy` union (`iac/spec/models.py`); nothing else
changes.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from iac.spec.models import ResolvedSpec

if TYPE_CHECKING:  # the package is imported by `modelstack status`, which needs no Pulumi
    import pulumi

TARGETS = {"docker": "iac.deploy.targets.docker", "kubernetes": "iac.deploy.targets.kubernetes"}


@dataclass(frozen=True)
class ContentKeys:
    """Cheap content hashes ModelService computes once (no TensorFlow, no build): what `pulumi preview`
    compares, so a target can name a model change before the new image exists."""

    model: str  # the prep key: the optimize settings, the model's and data's bytes
    image: str  # the build context's key: the prep key, what the templates read, the server code


@dataclass(frozen=True)
class ApiKey:
    """The API key the spec asks for (`serving.api_key_env`), present exactly when it asks for one."""

    env: str  # the variable the server reads the key from when the container starts
    secret: pulumi.Input[str]  # a Pulumi secret; reaches the replicas as that variable only


@dataclass(frozen=True)
class TargetArgs:
    """What every target receives from the shared stages: the spec, who owns the resources, the image."""

    spec: ResolvedSpec
    owner: Any  # pulumi.Output[str]: <project>/<stack>/<service>@<stack id>, labels every resource the stack owns
    base_name: str  # modelstack-<stack>-<service>: prefix of container, network and image names
    image_id: pulumi.Output[str]
    artifact_sha256: pulumi.Output[str]
    keys: ContentKeys
    api_key: ApiKey | None = None


class TargetComponent(Protocol):
    """The Pulumi component a target deploys; `outputs` has at least endpoint, base_url, version, replicas."""

    outputs: dict[str, pulumi.Output[Any]]


class TargetStatus(Protocol):
    """What `modelstack status` shows of a deployed service."""

    @property
    def endpoint(self) -> str: ...
    @property
    def serving(self) -> dict[str, Any] | None: ...  # the prep report the served model carries
    @property
    def replicas(self) -> list[tuple[str, str, str]]: ...  # (name, state, health)
    @property
    def proxy(self) -> str | None: ...
    @property
    def healer(self) -> bool: ...
    @property
    def wanted(self) -> int: ...  # the replicas asked for
    @property
    def ready(self) -> int: ...


class DeployTarget(Protocol):
    """A place the image runs. Its methods import Pulumi (and the target's SDK) only when they deploy."""

    def deploy(self, name: str, args: TargetArgs, opts: pulumi.ResourceOptions) -> TargetComponent:
        """The target's component, a child of ModelService (`opts` carries the parent)."""
        ...

    def base_url(self, spec: ResolvedSpec) -> str:
        """Where this host reaches the service."""
        ...

    def endpoint(self, spec: ResolvedSpec) -> str:
        """The TF Serving predict URL at `base_url`."""
        ...

    def status(self, spec: ResolvedSpec, stack: str) -> TargetStatus: ...


@dataclass(frozen=True)
class PackageTarget:
    """The `DeployTarget` of a target package: its URL and status functions (no Pulumi) and its Pulumi
    component, `<package>.target.Target`, imported only when it deploys (Pulumi and the target's SDK)."""

    package: str  # e.g. iac.deploy.targets.docker
    base_url: Callable[[ResolvedSpec], str]
    endpoint: Callable[[ResolvedSpec], str]
    status: Callable[[ResolvedSpec, str], TargetStatus]

    def deploy(self, name: str, args: TargetArgs, opts: pulumi.ResourceOptions) -> TargetComponent:
        component: TargetComponent = importlib.import_module(f"{self.package}.target").Target(name, args, opts)
        return component


def target_of(spec: ResolvedSpec) -> DeployTarget:
    """The target the spec names (``deploy.target``)."""
    target: DeployTarget = importlib.import_module(TARGETS[spec.spec.deploy.target]).TARGET
    return target

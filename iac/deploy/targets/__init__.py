"""Deploy targets: where the built image runs. One package per target, each with the same entry points.

A target module provides:

- ``Target(name, TargetArgs, opts)``: a Pulumi ComponentResource that runs the image, with ``outputs``
  (at least ``endpoint``, ``base_url``, ``version``, ``replicas``);
- ``base_url(spec)`` / ``endpoint(spec)``: where this host reaches the service;
- ``status(spec, stack)``: what ``modelstack status`` shows.

Adding a target means adding a package here and a name in ``TARGETS``; nothing else changes.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from iac.spec.models import ResolvedSpec

TARGETS = {"docker": "iac.deploy.targets.docker", "kubernetes": "iac.deploy.targets.kubernetes"}


@dataclass(frozen=True)
class TargetArgs:
    """What every target receives from the shared stages: the spec, who owns the resources, the image."""

    spec: ResolvedSpec
    owner: Any  # pulumi.Output[str]: <project>/<stack>/<service>@<stack id>, labels every resource the stack owns
    base_name: str  # modelstack-<stack>-<service>: prefix of container, network and image names
    image_id: Any  # pulumi.Output[str]
    artifact_sha256: Any  # pulumi.Output[str]
    api_key: Any = None  # pulumi.Input[str] secret, or None


def target_of(spec: ResolvedSpec) -> ModuleType:
    """The module of the target the spec names (``deploy.target``)."""
    return importlib.import_module(TARGETS[spec.spec.deploy.target])

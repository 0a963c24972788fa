"""The Docker target: one Docker host, replicas behind nginx, a healer process (see `target.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from iac.deploy.targets.docker.settings import base_url, endpoint
from iac.deploy.targets.docker.status import ServiceStatus, status
from iac.spec.models import ResolvedSpec

if TYPE_CHECKING:
    import pulumi

    from iac.deploy.targets import DeployTarget, TargetArgs, TargetComponent


class DockerTarget:
    """`DeployTarget` for one Docker host; the component needs Pulumi, status and URLs do not."""

    def deploy(self, name: str, args: TargetArgs, opts: pulumi.ResourceOptions) -> TargetComponent:
        from iac.deploy.targets.docker.target import Target

        return Target(name, args, opts)

    def base_url(self, spec: ResolvedSpec) -> str:
        return base_url(spec)

    def endpoint(self, spec: ResolvedSpec) -> str:
        return endpoint(spec)

    def status(self, spec: ResolvedSpec, stack: str) -> ServiceStatus:
        return status(spec, stack)


TARGET: DeployTarget = DockerTarget()  # mypy checks the class against the Protocol here

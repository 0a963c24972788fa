"""The Kubernetes target: the image pushed by digest and run by pulumi-kubernetes (see `target.py`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from iac.deploy.targets.kubernetes.settings import base_url, endpoint
from iac.deploy.targets.kubernetes.status import ServiceStatus, status
from iac.spec.models import ResolvedSpec

if TYPE_CHECKING:
    import pulumi

    from iac.deploy.targets import DeployTarget, TargetArgs, TargetComponent


class KubernetesTarget:
    """`DeployTarget` for a cluster; the component needs Pulumi and pulumi-kubernetes, status and URLs do not."""

    def deploy(self, name: str, args: TargetArgs, opts: pulumi.ResourceOptions) -> TargetComponent:
        from iac.deploy.targets.kubernetes.target import Target

        return Target(name, args, opts)

    def base_url(self, spec: ResolvedSpec) -> str:
        return base_url(spec)

    def endpoint(self, spec: ResolvedSpec) -> str:
        return endpoint(spec)

    def status(self, spec: ResolvedSpec, stack: str) -> ServiceStatus:
        return status(spec, stack)


TARGET: DeployTarget = KubernetesTarget()  # mypy checks the class against the Protocol here

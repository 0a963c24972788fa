"""The Kubernetes target: the image pushed by digest and run by pulumi-kubernetes (see `target.py`)."""

from iac.deploy.targets.kubernetes.settings import base_url, endpoint
from iac.deploy.targets.kubernetes.status import status

__all__ = ["Target", "base_url", "endpoint", "status"]


def __getattr__(name: str):  # the component needs Pulumi and pulumi-kubernetes; status and URLs do not
    if name == "Target":
        from iac.deploy.targets.kubernetes.target import Target

        return Target
    raise AttributeError(name)

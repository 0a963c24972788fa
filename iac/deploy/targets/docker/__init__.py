"""The Docker target: one Docker host, replicas behind nginx, a healer process (see `target.py`)."""

from iac.deploy.targets.docker.settings import base_url, endpoint
from iac.deploy.targets.docker.status import status

__all__ = ["Target", "base_url", "endpoint", "status"]


def __getattr__(name: str):  # the component needs Pulumi; status and URLs do not
    if name == "Target":
        from iac.deploy.targets.docker.target import Target

        return Target
    raise AttributeError(name)

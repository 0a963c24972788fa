"""The Docker target: one Docker host, replicas behind nginx, a healer process (see `target.py`).

Status and URLs need no Pulumi; the component is imported when it deploys."""

from __future__ import annotations

from iac.deploy.targets import DeployTarget, PackageTarget
from iac.deploy.targets.docker.settings import base_url, endpoint
from iac.deploy.targets.docker.status import status

TARGET: DeployTarget = PackageTarget(__name__, base_url, endpoint, status)  # mypy checks it against the Protocol

"""The Kubernetes target: the image pushed by digest and run by pulumi-kubernetes (see `target.py`).

Status and URLs need neither Pulumi nor pulumi-kubernetes; the component is imported when it deploys."""

from __future__ import annotations

from iac.deploy.targets import DeployTarget, PackageTarget
from iac.deploy.targets.kubernetes.settings import base_url, endpoint
from iac.deploy.targets.kubernetes.status import status

TARGET: DeployTarget = PackageTarget(__name__, base_url, endpoint, status)  # mypy checks it against the Protocol

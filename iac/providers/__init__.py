"""Old module paths of the dynamic providers, for Pulumi state written before the layout along stages.

Pulumi pickles each dynamic provider into state by module path and runs that pickle on delete; these
aliases let such state find the providers where they live now.
"""

import importlib
import sys

_MOVED = {
    "artifact": "iac.deploy.artifact",
    "image": "iac.deploy.image",
    "common": "iac.deploy.dynamic",
    "network": "iac.deploy.targets.docker.network",
    "proxy": "iac.deploy.targets.docker.proxy",
    "replicas": "iac.deploy.targets.docker.replicas",
    "healer": "iac.deploy.targets.docker.healer",
}
for _old, _new in _MOVED.items():
    sys.modules[f"{__name__}.{_old}"] = importlib.import_module(_new)

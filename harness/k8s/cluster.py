"""The local Kubernetes cluster's record and layout: what the control plane (`control_plane.py`) and the
real node (`node.py`) both read, so neither imports the other's module for it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
TOOLS = REPO / ".tools"
BIN = TOOLS / "bin"
SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.233.0.0/24"
BRIDGE = "mstk8s0"
NODE_IP = "172.17.0.1"  # docker0: a kubelet refuses a loopback node IP
REAL_NODE = "modelstack-node"
PAUSE_IMAGE = "modelstack-pause:1"
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
NEVER_READY = "modelstack.dev/simulate-never-ready"  # kwok leaves pods with this annotation unready
RESTRICTED = {
    "pod-security.kubernetes.io/enforce": "restricted",
    "pod-security.kubernetes.io/enforce-version": "latest",
}


@dataclass
class LocalCluster:
    root: str
    kubeconfig: str
    registry: str  # host:port of the registry pods pull from
    api_port: int
    pids: dict[str, int] = field(default_factory=dict)
    real_node: bool = False

    def save(self) -> None:
        Path(self.root, "cluster.json").write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, root: str | Path) -> LocalCluster:
        return cls(**json.loads(Path(root, "cluster.json").read_text()))

    def core(self) -> Any:
        from kubernetes import client, config

        return client.CoreV1Api(config.new_client_from_config(self.kubeconfig))

    def api(self) -> Any:
        from kubernetes import config

        return config.new_client_from_config(self.kubeconfig)


def kubeconfig(path: Path, pki: Path, user: str, server: str) -> Path:
    """A kubeconfig for `user` (its certificate under pki/) at `server`."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "modelstack-local",
                "clusters": [
                    {
                        "name": "modelstack-local",
                        "cluster": {"server": server, "certificate-authority": str(pki / "ca.crt")},
                    }
                ],
                "users": [
                    {
                        "name": user,
                        "user": {
                            "client-certificate": str(pki / f"{user}.crt"),
                            "client-key": str(pki / f"{user}.key"),
                        },
                    }
                ],
                "contexts": [{"name": "modelstack-local", "context": {"cluster": "modelstack-local", "user": user}}],
            }
        )
    )
    return path

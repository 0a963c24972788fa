"""Network: the stack's own bridge network, so its containers reach each other by name."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider

from iac.deploy.dynamic import changed, docker_client, owner_labels


class NetworkProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        client = docker_client()
        for stale in client.networks.list(names=[props["network_name"]]):
            stale.remove()  # left by an interrupted run; it is ours by name
        network = client.networks.create(props["network_name"], driver="bridge", labels=owner_labels(props["owner"]))
        return CreateResult(id_=str(network.id), outs={**props, "network_id": str(network.id)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = changed(olds, news, ("network_name", "owner"))
        return DiffResult(changes=bool(keys), replaces=keys, delete_before_replace=True)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        import docker.errors

        try:
            docker_client().networks.get(id_)
        except docker.errors.NotFound:
            return ReadResult(None, {})
        return ReadResult(id_, props)

    def delete(self, id_: str, _props: dict[str, Any]) -> None:
        import docker.errors

        try:
            docker_client().networks.get(id_).remove()
        except docker.errors.NotFound:
            pass


class Network(Resource, module="docker", name="Network"):
    network_id: pulumi.Output[str]
    network_name: pulumi.Output[str]

    def __init__(self, name: str, *, owner: str, network_name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(NetworkProvider(), name, {"owner": owner, "network_name": network_name, "network_id": None}, opts)

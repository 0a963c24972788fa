"""Network: the stack's own bridge network, so its containers reach each other by name."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import (
    CheckFailure,
    CheckResult,
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
    UpdateResult,
)

from iac.deploy.dynamic import changed, docker_client, owner_labels
from iac.deploy.targets.docker.collisions import is_ours, located, network_holder, owners_of


class NetworkProvider(ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        problem = _collision(news, owners_of(olds, news))
        return CheckResult(news, [CheckFailure("network_name", problem)] if problem else [])

    def create(self, props: dict[str, Any]) -> CreateResult:
        client = docker_client()
        problem = _collision(props, owners_of(props))
        if problem:
            raise RuntimeError(problem)
        for stale in client.networks.list(names=[props["network_name"]]):
            if stale.name == props["network_name"] and is_ours(stale.attrs.get("Labels"), owners_of(props)):
                stale.remove()  # left by an interrupted run of this stack
        network = client.networks.create(props["network_name"], driver="bridge", labels=owner_labels(props["owner"]))
        return CreateResult(id_=str(network.id), outs={**props, "network_id": str(network.id)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # An owner change (a stack made before stack ids gets one) keeps the network: it is known by id.
        replaces = changed(olds, news, ("network_name",))
        return DiffResult(
            changes=bool(replaces or changed(olds, news, ("owner",))), replaces=replaces, delete_before_replace=True
        )

    def update(self, id_: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**news, "network_id": id_})

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
            docker_client().networks.get(id_).remove()  # by the id this stack's state recorded
        except docker.errors.NotFound:
            pass


def _collision(props: dict[str, Any], owners: set[str]) -> str | None:
    held = network_holder(docker_client(), props["network_name"], owners)
    if held is None:
        return None
    return located(
        props.get("where") or {},
        "name",
        f"the network {props['network_name']} is already taken by {held}",
        "give this service another name (or run the stack under another stack name)",
    )


class Network(Resource, module="docker", name="Network"):
    network_id: pulumi.Output[str]
    network_name: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        owner: pulumi.Input[str],
        network_name: str,
        where: dict[str, str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {"owner": owner, "network_name": network_name, "network_id": None, "where": where or {}}
        super().__init__(NetworkProvider(), name, props, opts)

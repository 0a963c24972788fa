"""Network: the stack's own bridge network, so its containers reach each other by name.

Its name is `modelstack-<stack>-<service>` when that is free, and that name with the stack's id
appended when another stack (a second checkout of the project, another user of the engine) or a
stranger holds it. The name taken is chosen once, at create, and kept in state: the stack's
container names and proxy config folder derive from it, so two stacks of one name serve side by
side and neither ever touches the other's objects.
"""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import (
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
        return CheckResult(news, [])  # a held name is not a collision: create takes the stack's own

    def create(self, props: dict[str, Any]) -> CreateResult:
        client = docker_client()
        owners = owners_of(props)
        name = props["network_name"]
        if network_holder(client, name, owners) is not None:
            name = f"{name}-{stack_id_of(props['owner'])}"
            held = network_holder(client, name, owners)
            if held is not None:  # only a stranger copying this stack's id gets here
                raise RuntimeError(
                    located(
                        props.get("where") or {},
                        "name",
                        f"the network {name} is already taken by {held}",
                        "give this service another name (or run the stack under another stack name)",
                    )
                )
        for stale in client.networks.list(names=[name]):
            if stale.name == name and is_ours(stale.attrs.get("Labels"), owners):
                stale.remove()  # left by an interrupted run of this stack
        network = client.networks.create(name, driver="bridge", labels=owner_labels(props["owner"]))
        return CreateResult(id_=str(network.id), outs={**props, "network_id": str(network.id), "taken_name": name})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # An owner change (a stack made before stack ids gets one) keeps the network: it is known by id.
        replaces = changed(olds, news, ("network_name",))
        return DiffResult(
            changes=bool(replaces or changed(olds, news, ("owner",))), replaces=replaces, delete_before_replace=True
        )

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**news, "network_id": id_, "taken_name": taken_name(olds)})

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


def stack_id_of(owner: str) -> str:
    """The stack id of an owner label `<project>/<stack>/<service>@<id>`."""
    prefix, _, stack_id = owner.rpartition("@")
    if not prefix or not stack_id:
        raise ValueError(f"owner {owner!r} carries no stack id")
    return stack_id


def taken_name(outs: dict[str, Any]) -> str:
    """The name the network got; a network made before names were chosen took the one asked for."""
    return str(outs.get("taken_name") or outs["network_name"])


class Network(Resource, module="docker", name="Network"):
    network_id: pulumi.Output[str]
    network_name: pulumi.Output[str]  # the name asked for: modelstack-<stack>-<service>
    taken_name: pulumi.Output[str | None]  # the name it got (None in the state of a network made before)

    def __init__(
        self,
        name: str,
        *,
        owner: pulumi.Input[str],
        network_name: str,
        where: dict[str, str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "owner": owner,
            "network_name": network_name,
            "network_id": None,
            "taken_name": None,
            "where": where or {},
        }
        super().__init__(NetworkProvider(), name, props, opts)

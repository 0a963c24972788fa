"""StackIdentity: a random id made once, at a stack's first `up`, and kept in its state.

`<project>/<stack>/<service>` does not name one deployment: two checkouts of a project (or two users
of one Docker Engine) share it. The id does: it lives only in this stack's state, so every Docker
object labelled with `owner_of(prefix, id)` belongs to this state and to no other. Providers remove,
rename or reuse only objects that carry it.
"""

from __future__ import annotations

import secrets
from typing import Any

import pulumi
from pulumi.dynamic import (
    CreateResult,
    DiffResult,
    ReadResult,
    Resource,
    ResourceProvider,
)

ID_BYTES = 4  # 8 hex digits: short enough to read in a label, 4e9 values per owner prefix


class StackIdentityProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        stack_id = secrets.token_hex(ID_BYTES)
        return CreateResult(id_=stack_id, outs={**props, "stack_id": stack_id})

    def diff(self, _id: str, _olds: dict[str, Any], _news: dict[str, Any]) -> DiffResult:
        # Never changes: a new id would disown every object the stack made.
        return DiffResult(changes=False, replaces=[], delete_before_replace=False)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)  # nothing outside the state to drift

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


def owner_of(prefix: str, stack_id: str) -> str:
    """The owner label value: `<project>/<stack>/<service>@<id>`."""
    return f"{prefix}@{stack_id}"


def owner_prefix(owner: str) -> str:
    """`<project>/<stack>/<service>` of an owner label (labels made before stack ids have no `@`)."""
    return owner.rsplit("@", 1)[0]


class StackIdentity(Resource, module="modelstack", name="StackIdentity"):
    stack_id: pulumi.Output[str]

    def __init__(self, name: str, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(StackIdentityProvider(), name, {"stack_id": None}, opts)

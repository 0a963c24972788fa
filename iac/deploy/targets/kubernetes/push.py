"""Push: the shared Image pushed to the spec's registry, known from then on by its digest."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from iac.deploy.dynamic import changed


class PushProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        ref = _push(props)
        return CreateResult(id_=ref, outs={**props, "image_ref": ref, "digest": ref.rpartition("@")[2]})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = changed(olds, news, ("image_id", "repository"))
        return DiffResult(changes=bool(keys), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        ref = _push(news)
        return UpdateResult(outs={**news, "image_ref": ref, "digest": ref.rpartition("@")[2]})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        # The registry keeps what was pushed (pods of an older revision may still pull it); the local
        # tag goes with the image when the shared Image is deleted.
        return None


def _push(props: dict[str, Any]) -> str:
    """Tag the local image <repository>:<short id>, push it, return <repository>@<digest>."""
    from iac.deploy.dynamic import docker_client

    client = docker_client()
    repository, image_id = props["repository"], props["image_id"]
    tag = image_id.removeprefix("sha256:")[:12]
    client.images.get(image_id).tag(repository, tag=tag)
    digest = None
    for line in client.api.push(repository, tag=tag, stream=True, decode=True):
        if line.get("error"):
            raise RuntimeError(f"pushing {repository}:{tag} failed: {line['error']}")
        aux = line.get("aux") or {}
        digest = aux.get("Digest", digest)
    if not digest:
        raise RuntimeError(f"pushing {repository}:{tag} reported no digest")
    return f"{repository}@{digest}"


class Push(Resource, module="kubernetes", name="Push"):
    image_ref: pulumi.Output[str]
    digest: pulumi.Output[str]

    def __init__(
        self, name: str, *, repository: str, image_id: pulumi.Input[str], opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(
            PushProvider(),
            name,
            {"repository": repository, "image_id": image_id, "image_ref": None, "digest": None},
            opts,
        )

"""Image: renders the build context for the artifact and builds it with the local engine.
Nothing is pulled: the base image is local, the wheels are in the context."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from iac.deploy.dynamic import OWNER_LABEL, changed, docker_client, owner_labels


class ImageProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        image_id = _build(props)
        return CreateResult(id_=image_id, outs={**props, "image_id": image_id})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = changed(olds, news, ("context_key", "tag", "artifact_sha256"))
        return DiffResult(changes=bool(keys), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        image_id = _build(news)
        # The old image may still run the old container (updated after us); sweep what is unused.
        _remove_unused(news["owner"], keep=image_id)
        return UpdateResult(outs={**news, "image_id": image_id})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        import docker.errors

        try:
            docker_client().images.get(id_)
        except docker.errors.ImageNotFound:
            return ReadResult(None, {})
        return ReadResult(id_, props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        # Containers go first (they depend on us), so every image of this service can go now.
        _remove_unused(props["owner"], keep=None, force=True)


def _build(props: dict[str, Any]) -> str:
    import docker.errors

    from iac.build.render import render
    from iac.spec.models import ResolvedSpec
    from modelprep.report import PrepReport

    spec = ResolvedSpec.model_validate(props["spec"])
    report = PrepReport.model_validate(props["report"])  # from state, where every number came back a float
    with tempfile.TemporaryDirectory(prefix="modelstack-context-") as tmp:
        context = Path(tmp) / "context"
        render(spec, Path(props["artifact_path"]), report, context)
        try:
            image, _logs = docker_client().images.build(
                path=str(context),
                tag=props["tag"],
                labels=owner_labels(props["owner"]),
                rm=True,
                forcerm=True,
                pull=False,
            )
        except docker.errors.BuildError as exc:
            tail = "".join(str(chunk.get("stream", chunk.get("error", ""))) for chunk in exc.build_log)[-2000:]
            raise RuntimeError(f"docker build of {props['tag']} failed: {exc.msg}\n{tail}") from None
    return str(image.id)


def _remove_unused(owner: str, keep: str | None, force: bool = False) -> None:
    import docker.errors

    client = docker_client()
    for image in client.images.list(filters={"label": f"{OWNER_LABEL}={owner}"}):
        if image.id == keep:
            continue
        try:
            client.images.remove(image.id, force=force, noprune=False)
        except docker.errors.APIError:
            pass  # still used by a running container; the next update or destroy removes it


class Image(Resource, module="docker", name="Image"):
    image_id: pulumi.Output[str]
    tag: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        owner: pulumi.Input[str],
        tag: pulumi.Input[str],
        context_key: str,
        spec: dict[str, Any],
        artifact_path: pulumi.Input[str],
        artifact_sha256: pulumi.Input[str],
        report: pulumi.Input[dict],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "owner": owner,
            "tag": tag,
            "context_key": context_key,
            "spec": spec,
            "artifact_path": artifact_path,
            "artifact_sha256": artifact_sha256,
            "report": report,
            "image_id": None,
        }
        super().__init__(ImageProvider(), name, props, opts)

"""ModelArtifact: the prep stage as a resource. Its identity is the prep key (a content hash),
so preview knows whether the model changes without running TensorFlow."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from iac.deploy.dynamic import changed
from modelprep.report import PrepReport

OUTPUTS = ("artifact_path", "artifact_sha256", "variant", "size_bytes", "accuracy", "baseline_accuracy", "report")


class ModelArtifactProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=props["key"], outs={**props, **_prep(props)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # The cache is content-addressed, so a new key is an update, never a replacement.
        return DiffResult(changes=bool(changed(olds, news, ("key",))), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**news, **_prep(news)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        from pathlib import Path

        # A cache entry that was wiped is drift: forget the resource so `up` makes it again.
        # The artifact is a file or, for some families, a folder.
        if not Path(props.get("artifact_path") or "").exists():
            return ReadResult(None, {})
        return ReadResult(id_, props)

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        # Cache entries are shared by content; `modelstack` never deletes what another stack may use.
        return None


def _prep(props: dict[str, Any]) -> dict[str, Any]:
    from modelprep.cache import Cache
    from modelprep.prep import prep
    from modelprep.request import PrepRequest

    # The typed request takes back what Pulumi state did to it (ints as floats, None dropped).
    result = prep(PrepRequest.model_validate(props["request"]), Cache())
    if result.key != props["key"]:
        raise RuntimeError(
            f"model inputs changed during the update (key {result.key[:12]} != {props['key'][:12]}); run `pulumi up` again"
        )
    return outputs_of(str(result.artifact_path), result.report)


def outputs_of(artifact_path: str, report: PrepReport) -> dict[str, Any]:
    """The resource's outputs, every one read from the report."""
    return {
        "artifact_path": artifact_path,
        "artifact_sha256": report.artifact_sha256,
        "variant": report.variant,
        "size_bytes": report.size_bytes,
        "accuracy": report.accuracy,
        "baseline_accuracy": report.baseline_accuracy,
        "report": report.model_dump(mode="json", exclude_none=True),
    }


class ModelArtifact(Resource, module="modelstack", name="ModelArtifact"):
    artifact_path: pulumi.Output[str]
    artifact_sha256: pulumi.Output[str]
    variant: pulumi.Output[str]
    size_bytes: pulumi.Output[int]
    accuracy: pulumi.Output[float]
    baseline_accuracy: pulumi.Output[float]
    report: pulumi.Output[dict]  # PrepReport.model_dump(mode="json"); `typed_report` validates it back

    model: pulumi.Output[Any]  # `review.model_fields`, or "prep needed": what `preview --diff` shows of the model

    def __init__(
        self,
        name: str,
        key: str,
        request: dict[str, Any],
        model: Any = None,
        known: dict[str, Any] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        """`known`: the outputs when the prep is already cached (`outputs_of`). A dynamic provider's preview
        shows its inputs as its outputs, so with them `preview` shows the new variant, size and accuracy
        rather than unknowns; `up` makes them again from the cache."""
        props = {"key": key, "request": request, **{k: None for k in OUTPUTS}, **(known or {}), "model": model}
        super().__init__(ModelArtifactProvider(), name, props, opts)

    @property
    def typed_report(self) -> pulumi.Output[PrepReport]:
        """The report as the typed model (state hands every number back as a float)."""
        return self.report.apply(PrepReport.model_validate)

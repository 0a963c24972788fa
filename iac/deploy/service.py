"""ModelService: the shared stages (artifact ▶ image) for one spec, then the deploy target it names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi

from iac.build.keys import context_key
from iac.deploy.artifact import ModelArtifact, outputs_of
from iac.deploy.identity import StackIdentity, owner_of
from iac.deploy.image import Image
from iac.deploy.targets import ApiKey, ContentKeys, TargetArgs, target_of
from iac.review import PREP_NEEDED, model_fields, rollout_plan
from iac.spec.errors import UserError
from iac.spec.models import ResolvedSpec
from modelprep.prep import PrepResult
from modelprep.request import PrepRequest, prep_key, prep_request


@dataclass(frozen=True)
class ModelServiceArgs:
    spec: ResolvedSpec
    project: str
    stack: str
    api_key: pulumi.Input[str] | None = None  # a Pulumi secret; reaches containers as an env var only


class ModelService(pulumi.ComponentResource):
    outputs: dict[str, pulumi.Output[Any]]

    def __init__(self, name: str, args: ModelServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("modelstack:index:ModelService", name, None, opts)
        spec = args.spec
        # <project>/<stack>/<service>@<id>: the id lives only in this stack's state, so two checkouts
        # (or two users) of one project never take each other's Docker objects for their own.
        identity = StackIdentity(f"{name}-identity", opts=pulumi.ResourceOptions(parent=self))
        owner = identity.stack_id.apply(lambda stack_id: owner_of(f"{args.project}/{args.stack}/{spec.name}", stack_id))
        base = f"modelstack-{args.stack}-{spec.name}"
        child = pulumi.ResourceOptions(parent=self)

        # Cheap content hashes (no TensorFlow, no docker build): what preview compares.
        request = prep_request(spec)
        key = prep_key(request)
        ctx_key = context_key(spec, key)

        # The request without where the spec's lines are: editing a comment changes no resource.
        cached = prepared(request)
        artifact = ModelArtifact(
            f"{name}-artifact",
            key=key,
            request=request.model_dump(mode="json", exclude={"locations"}),
            # The model's fields and the rollout plan: what `preview --diff` shows beside the infrastructure.
            # The plan names the prep it rolls, so every model change shows it (a diff elides unchanged fields).
            model={
                **(model_fields(cached.report, spec) if cached else {"prep": PREP_NEEDED}),
                "rollout": f"prep {key[:12]} by {rollout_plan(spec)}",
            },
            known=outputs_of(str(cached.artifact_path), cached.report) if cached else None,
            opts=child,
        )
        report = artifact.typed_report
        image = Image(
            # The stack id in the tag too: another checkout building the same context never takes it over.
            f"{name}-image",
            owner=owner,
            tag=identity.stack_id.apply(lambda stack_id: f"{base}:{ctx_key[:12]}-{stack_id}"),
            context_key=ctx_key,
            spec=spec.model_dump(mode="json", exclude={"locations"}),
            artifact_path=artifact.artifact_path,
            artifact_sha256=artifact.artifact_sha256,
            report=artifact.report,
            opts=child,
        )
        target = target_of(spec).deploy(
            name,
            TargetArgs(
                spec,
                owner,
                base,
                image.image_id,
                artifact.artifact_sha256,
                ContentKeys(model=key, image=ctx_key),
                api_key_of(spec, args.api_key),
            ),
            child,
        )
        self.outputs = {
            **target.outputs,
            "image_id": image.image_id,
            "model_sha256": report.apply(lambda r: r.model_sha256),
            "variant": report.apply(lambda r: r.variant),
            "artifact_size_bytes": report.apply(lambda r: r.size_bytes),
            "accuracy": report.apply(lambda r: r.accuracy),
            "model": artifact.model,
        }
        self.register_outputs(self.outputs)


def api_key_of(spec: ResolvedSpec, secret: pulumi.Input[str] | None) -> ApiKey | None:
    """The stack's API key when the spec asks for one (serving.api_key_env), checked once for every target."""
    env = spec.spec.serving.api_key_env
    if env is None:
        return None
    if secret is None:
        raise UserError.single(
            spec.where("serving.api_key_env"),
            "serving.api_key_env",
            f"asks for an API key in {env}, but the stack has none",
            "set it with `pulumi config set --secret apiKey <key>`, or remove serving.api_key_env",
        )
    return ApiKey(env=env, secret=secret)


def prepared(request: PrepRequest) -> PrepResult | None:
    """The prep result for `request`: from the cache; at `up` (not preview) made now when missing, so the
    state records the model that was deployed (what the next `preview --diff` shows as the old side).
    Preview never preps: it runs no TensorFlow."""
    from modelprep.prep import cached_result

    cached = cached_result(request)
    if cached is not None or pulumi.runtime.is_dry_run():
        return cached
    from modelprep.cache import Cache
    from modelprep.prep import prep

    try:
        return prep(request, Cache())
    except UserError as exc:
        raise pulumi.RunError(str(exc)) from None  # one located line, no traceback


def export_service(spec_path: str, api_key: pulumi.Input[str] | None = None) -> ModelService:
    """What a stack's __main__.py does: load the spec, build its ModelService, export its outputs."""
    from iac.spec.load import load_resolved

    spec = load_resolved(spec_path)
    service = ModelService(spec.name, ModelServiceArgs(spec, pulumi.get_project(), pulumi.get_stack(), api_key))
    for name, value in service.outputs.items():
        pulumi.export(name, value)
    return service

"""ModelService: artifact ▶ image ▶ network ▶ container for one model spec."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from iac.pipeline import container_settings, context_key, endpoint, prep_request, prep_request_dict
from iac.providers.artifact import ModelArtifact
from iac.providers.container import Container
from iac.providers.image import Image
from iac.providers.network import Network
from iac.spec import ResolvedSpec
from modelprep.prep import prep_key


@dataclass(frozen=True)
class ModelServiceArgs:
    spec: ResolvedSpec
    project: str
    stack: str


class ModelService(pulumi.ComponentResource):
    endpoint: pulumi.Output[str]

    def __init__(self, name: str, args: ModelServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("modelstack:index:ModelService", name, None, opts)
        spec = args.spec
        owner = f"{args.project}/{args.stack}/{spec.name}"
        base = f"modelstack-{args.stack}-{spec.name}"
        child = pulumi.ResourceOptions(parent=self)

        # Cheap content hashes (no TensorFlow, no docker build): what preview compares.
        key = prep_key(prep_request(spec))
        ctx_key = context_key(spec, key)

        self.artifact = ModelArtifact(f"{name}-artifact", key=key, request=prep_request_dict(spec), opts=child)
        self.network = Network(f"{name}-network", owner=owner, network_name=base, opts=child)
        self.image = Image(
            f"{name}-image", owner=owner, tag=f"{base}:{ctx_key[:12]}", context_key=ctx_key,
            spec=spec.model_dump(mode="json"), artifact_path=self.artifact.artifact_path,
            artifact_sha256=self.artifact.artifact_sha256, report=self.artifact.report, opts=child,
        )
        self.container = Container(
            f"{name}-container", owner=owner, container_name=base, image_id=self.image.image_id,
            network_name=self.network.network_name, settings=container_settings(spec), opts=child,
        )
        self.endpoint = self.container.container_id.apply(lambda _: endpoint(spec))
        self.outputs: dict[str, pulumi.Output] = {
            "endpoint": self.endpoint,
            "image_id": self.image.image_id,
            "model_sha256": self.artifact.report.apply(lambda r: r["model_sha256"]),
            "variant": self.artifact.variant,
            "artifact_size_bytes": self.artifact.size_bytes,
            "accuracy": self.artifact.accuracy,
        }
        self.register_outputs(self.outputs)

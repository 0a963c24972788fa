"""ModelService: artifact ▶ image ▶ network ▶ proxy ▶ replicas (+ healer) for one model spec."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from iac.pipeline import (
    base_url, context_key, endpoint, prep_request, prep_request_dict, probe_host, proxy_settings, replica_settings,
)
from iac.proxy_config import PARKED, nginx_conf
from iac.providers.artifact import ModelArtifact
from iac.providers.healer import Healer
from iac.providers.image import Image
from iac.providers.network import Network
from iac.providers.proxy import Proxy
from iac.providers.replicas import Replicas, version_of
from iac.spec import ResolvedSpec
from modelprep.cache import default_root
from modelprep.errors import UserError
from modelprep.prep import prep_key

PROXY_IMAGE = "modelstack-proxy:bookworm-nginx"


@dataclass(frozen=True)
class ModelServiceArgs:
    spec: ResolvedSpec
    project: str
    stack: str
    api_key: pulumi.Input[str] | None = None  # a Pulumi secret; reaches containers as an env var only


class ModelService(pulumi.ComponentResource):
    outputs: dict[str, pulumi.Output]

    def __init__(self, name: str, args: ModelServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("modelstack:index:ModelService", name, None, opts)
        spec = args.spec
        owner = f"{args.project}/{args.stack}/{spec.name}"
        base = f"modelstack-{args.stack}-{spec.name}"
        config_dir = str(default_root() / "proxy" / owner.replace("/", "--"))
        child = pulumi.ResourceOptions(parent=self)

        # Cheap content hashes (no TensorFlow, no docker build): what preview compares.
        key = prep_key(prep_request(spec))
        ctx_key = context_key(spec, key)

        artifact = ModelArtifact(f"{name}-artifact", key=key, request=prep_request_dict(spec), opts=child)
        network = Network(f"{name}-network", owner=owner, network_name=base, opts=child)
        image = Image(
            f"{name}-image", owner=owner, tag=f"{base}:{ctx_key[:12]}", context_key=ctx_key,
            spec=spec.model_dump(mode="json"), artifact_path=artifact.artifact_path,
            artifact_sha256=artifact.artifact_sha256, report=artifact.report, opts=child,
        )
        proxy = Proxy(
            f"{name}-proxy", owner=owner, container_name=f"{base}-proxy", image=PROXY_IMAGE,
            network_name=network.network_name, settings=proxy_settings(spec), config_dir=config_dir,
            nginx_conf=nginx_conf(spec.name, spec.spec.deploy.replicas),
            parked_upstream=PARKED, opts=child,
        )
        settings = replica_settings(spec)
        key_env = spec.spec.serving.api_key_env
        if key_env and args.api_key is None:
            raise UserError.single(
                spec.spec_file, "serving.api_key_env", f"asks for an API key in {key_env}, but the stack has none",
                "set it with `pulumi config set --secret apiKey <key>`, or remove serving.api_key_env",
            )
        api_key = args.api_key if key_env else ""
        version = pulumi.Output.all(image.image_id, api_key).apply(lambda v: version_of(v[0], settings, v[1]))
        replicas = Replicas(
            f"{name}-replicas",
            props={
                "owner": owner, "base_name": base, "image_id": image.image_id, "network_name": network.network_name,
                "replicas": spec.spec.deploy.replicas, "settings": settings, "version": version, "api_key": api_key, "api_key_env": key_env,
                "proxy_name": proxy.container_name, "config_dir": config_dir, "model_name": spec.name,
                "input_shape": list(spec.spec.model.inputs[0].shape), "artifact_sha256": artifact.artifact_sha256,
                "probe_host": probe_host(spec), "ready_timeout_s": spec.spec.deploy.ready_timeout,
            },
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["api_key"]),
        )
        Healer(f"{name}-healer", owner=owner, config_dir=config_dir,
               opts=pulumi.ResourceOptions(parent=self, depends_on=[proxy, replicas]))

        served = replicas.version.apply(lambda _: endpoint(spec))
        self.outputs = {
            "endpoint": served,
            "base_url": replicas.version.apply(lambda _: base_url(spec)),
            "image_id": image.image_id,
            "version": replicas.version,
            "replicas": replicas.replica_names.apply(len),
            "model_sha256": artifact.report.apply(lambda r: r["model_sha256"]),
            "variant": artifact.variant,
            "artifact_size_bytes": artifact.size_bytes,
            "accuracy": artifact.accuracy,
        }
        self.register_outputs(self.outputs)


def export_service(spec_path: str, api_key: pulumi.Input[str] | None = None) -> ModelService:
    """What a stack's __main__.py does: load the spec, build its ModelService, export its outputs."""
    from iac.load import load_resolved

    spec = load_resolved(spec_path)
    service = ModelService(spec.name, ModelServiceArgs(spec, pulumi.get_project(), pulumi.get_stack(), api_key))
    for name, value in service.outputs.items():
        pulumi.export(name, value)
    return service

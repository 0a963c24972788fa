"""The Docker target: network ▶ nginx proxy ▶ replicas (rolling, health-gated) ▶ healer on one Docker host."""

from __future__ import annotations

import pulumi

from iac.build.proxy_config import PARKED, nginx_conf
from iac.deploy.needs import model_needs, read_timeout_s
from iac.deploy.rollout.steps import refuse_rolled_back
from iac.deploy.targets import TargetArgs
from iac.deploy.targets.docker.healer import Healer
from iac.deploy.targets.docker.network import Network
from iac.deploy.targets.docker.proxy import Proxy
from iac.deploy.targets.docker.replicas import Replicas, version_of
from iac.deploy.targets.docker.settings import (
    base_url,
    docker_settings,
    endpoint,
    grpc_target,
    probe_host,
    proxy_settings,
    publishes_grpc,
    replica_settings,
    warm_up,
)
from iac.spec.errors import UserError
from modelprep.cache import default_root

PROXY_IMAGE = "modelstack-proxy:bookworm-nginx"


def config_dir_of(service: str, base: str, taken: str) -> str:
    """The proxy's config folder: per project, stack and service, plus the stack id the network name
    carries when another stack holds the plain name (a stack made before keeps its folder)."""
    folder = f"{pulumi.get_project()}--{pulumi.get_stack()}--{service}" + taken[len(base) :]
    return str(default_root() / "proxy" / folder)


class Target(pulumi.ComponentResource):
    outputs: dict[str, pulumi.Output]

    def __init__(self, name: str, args: TargetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("modelstack:docker:Target", name, None, opts)
        spec, owner, base = args.spec, args.owner, args.base_name
        deploy = docker_settings(spec)
        try:  # the memory limit and stop grace period follow from what the prepped model needs
            needs = model_needs(spec, args.keys.model)
            settings = replica_settings(spec, needs)
        except UserError as exc:
            raise pulumi.RunError(str(exc)) from None  # one located line, no traceback
        # Stacks deployed before targets were a seam had these children directly under ModelService.
        moved = [pulumi.Alias(parent=opts.parent)] if opts is not None and opts.parent is not None else []
        child = pulumi.ResourceOptions(parent=self, aliases=moved)

        # Where model.yaml sets what a collision asks the user to change (the providers report it).
        where = {field: spec.where(field) for field in ("name", "deploy.host_port", "deploy.grpc_host_port")}
        network = Network(f"{name}-network", owner=owner, network_name=base, where=where, opts=child)
        # The name the network got (the stack id appended when another stack holds `base`) names the
        # stack's containers and its proxy config folder, so a second stack of one name shares none.
        named = network.taken_name.apply(lambda taken: taken or base)
        config_dir = named.apply(lambda taken: config_dir_of(spec.name, base, taken))
        proxy = Proxy(
            f"{name}-proxy",
            owner=owner,
            container_name=named.apply(lambda taken: f"{taken}-proxy"),
            image=PROXY_IMAGE,
            network_name=named,
            settings=proxy_settings(spec),
            config_dir=config_dir,
            nginx_conf=nginx_conf(
                spec.name, deploy.replicas, grpc=publishes_grpc(spec), read_timeout_s=read_timeout_s(needs)
            ),
            parked_upstream=PARKED,
            where=where,
            opts=child,
        )
        key_env, api_key = (args.api_key.env, args.api_key.secret) if args.api_key is not None else (None, "")
        version = pulumi.Output.all(args.image_id, api_key).apply(lambda v: version_of(v[0], settings, v[1]))
        replicas = Replicas(
            f"{name}-replicas",
            props={
                "owner": owner,
                "base_name": named,
                "image_id": args.image_id,
                "network_name": named,
                "replicas": deploy.replicas,
                "settings": settings,
                "version": version,
                "api_key": api_key,
                "api_key_env": key_env,
                "proxy_name": proxy.container_name,
                "config_dir": config_dir,
                "model_name": spec.name,
                **warm_up(spec),  # the request a new replica answers before it takes traffic
                # the warm-up request names each input (one or several): [name, shape, dtype]
                "inputs": [[t.name, list(t.shape or []), t.dtype.value] for t in spec.inputs],
                "artifact_sha256": args.artifact_sha256,
                "probe_host": probe_host(spec),
                "ready_timeout_s": deploy.ready_timeout,
                # canary or shadow: the steps and thresholds; the metric says how predictions are compared
                "rollout": spec.spec.deploy.rollout.model_dump(mode="json"),
                "metric": spec.spec.optimize.metric.value,
            },
            opts=pulumi.ResourceOptions(parent=self, aliases=moved, additional_secret_outputs=["api_key"]),
        )
        pulumi.Output.all(replicas.last_rollout, version).apply(lambda v: refuse_rolled_back(*v))
        if spec.spec.deploy.rollout.strategy != "rolling":
            from iac.deploy.rollout.progress import follow

            follow(config_dir, replicas.version)  # step, weight and live figures as the rollout goes
        Healer(
            f"{name}-healer",
            owner=owner,
            config_dir=config_dir,
            opts=pulumi.ResourceOptions(parent=self, aliases=moved, depends_on=[proxy, replicas]),
        )

        self.outputs = {
            "last_rollout": replicas.last_rollout,
            "endpoint": replicas.version.apply(lambda _: endpoint(spec)),
            "base_url": replicas.version.apply(lambda _: base_url(spec)),
            "version": replicas.version,
            "replicas": replicas.replica_names.apply(len),
        }
        if publishes_grpc(spec):
            self.outputs["grpc_target"] = replicas.version.apply(lambda _: grpc_target(spec))
        self.register_outputs(self.outputs)

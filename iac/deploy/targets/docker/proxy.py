"""Proxy: the nginx container that owns the port users call.

Its configuration lives in a host directory mounted read-only at /etc/modelstack, so it
survives restarts; a rollout rewrites `upstream.conf` there and reloads nginx gracefully
(old workers finish their requests, new ones use the new replicas).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
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

from iac.deploy.dynamic import HARDENED, UNKNOWN, changed, docker_client, owner_labels
from iac.deploy.targets.docker.collisions import container_holder, is_ours, located, owners_of, port_holder

CONFIG_MOUNT = "/etc/modelstack"
NGINX_CONF = f"{CONFIG_MOUNT}/nginx.conf"
RECREATE_KEYS = ("image", "container_name", "network_name", "settings", "config_dir", "owner")
PROXY_UID = "33:33"  # www-data in the Debian image


class ProxyProvider(ResourceProvider):
    def check(self, olds: dict[str, Any], news: dict[str, Any]) -> CheckResult:
        failures = [CheckFailure(field, problem) for field, problem in collisions(news, owners_of(olds, news))]
        return CheckResult(news, failures)

    def create(self, props: dict[str, Any]) -> CreateResult:
        _refuse_collisions(props, owners_of(props))
        write_config(props["config_dir"], "nginx.conf", props["nginx_conf"], keep_existing=False)
        write_config(props["config_dir"], "upstream.conf", props["parked_upstream"], keep_existing=True)
        write_config(props["config_dir"], "upstream-grpc.conf", props["parked_upstream"], keep_existing=True)
        write_rollout_defaults(props)
        container = _run(props)
        return CreateResult(id_=str(container.id), outs={**props, "container_id": str(container.id)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = changed(olds, news, (*RECREATE_KEYS, "nginx_conf"))
        return DiffResult(changes=bool(keys), replaces=[], delete_before_replace=False)

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        write_config(news["config_dir"], "nginx.conf", news["nginx_conf"], keep_existing=False)
        write_config(news["config_dir"], "upstream-grpc.conf", news["parked_upstream"], keep_existing=True)
        write_rollout_defaults(news)
        if changed(olds, news, RECREATE_KEYS) or not _running(news["container_name"]):
            owners = owners_of(olds, news)
            _refuse_collisions(news, owners)
            container_id = str(_run(news, owners).id)  # the port or image changed, or it is down: a new container
        else:
            container_id = id_
            reload(news["container_name"])  # only the nginx settings changed: graceful reload
        return UpdateResult(outs={**news, "container_id": container_id})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        import docker.errors

        try:
            container = docker_client().containers.get(id_)
        except docker.errors.NotFound:
            return ReadResult(None, {})
        if container.status not in ("running", "restarting"):
            return ReadResult(None, {})
        return ReadResult(id_, props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        remove_named(props["container_name"], owners_of(props))
        shutil.rmtree(props["config_dir"], ignore_errors=True)


def write_config(config_dir: str, name: str, content: str, keep_existing: bool) -> None:
    """Atomic write (rename in the mounted directory) so nginx never reads half a file."""
    directory = Path(config_dir)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    target = directory / name
    if keep_existing and target.exists():
        return
    staging = directory / f".{name}.{os.getpid()}"
    staging.write_text(content)
    staging.chmod(0o644)
    os.replace(staging, target)


def write_rollout_defaults(props: dict[str, Any]) -> None:
    """No rollout in progress: the stable version answers everything, nothing is copied or logged.
    Kept when present: a rollout the provider is driving owns these files."""
    from iac.build.proxy_config import mirror_conf, split_conf

    write_config(props["config_dir"], "upstream-candidate.conf", props["parked_upstream"], keep_existing=True)
    write_config(props["config_dir"], "split.conf", split_conf(), keep_existing=True)
    write_config(props["config_dir"], "mirror.conf", mirror_conf(False), keep_existing=True)


def _running(container_name: str) -> bool:
    import docker.errors

    try:
        return bool(docker_client().containers.get(container_name).status == "running")
    except docker.errors.NotFound:
        return False


def reload(container_name: str) -> None:
    container = docker_client().containers.get(container_name)
    result = container.exec_run(["nginx", "-c", NGINX_CONF, "-s", "reload"], user=PROXY_UID)
    if result.exit_code != 0:
        raise RuntimeError(f"nginx reload in {container_name} failed: {result.output.decode(errors='replace')}")


def collisions(props: dict[str, Any], owners: set[str]) -> list[tuple[str, str]]:
    """(field, located line) for each name or host port this proxy wants that a stranger holds."""
    client, where, s = docker_client(), props.get("where") or {}, props["settings"]
    found = []
    held = container_holder(client, props["container_name"], owners)
    if held:
        found.append(
            (
                "name",
                located(
                    where,
                    "name",
                    f"the container name {props['container_name']} is taken by {held}",
                    "give this service another name (or run the stack under another stack name)",
                ),
            )
        )
    if s == UNKNOWN or not isinstance(s, dict):
        return found
    for field, port in (("deploy.host_port", s.get("host_port")), ("deploy.grpc_host_port", s.get("grpc_host_port"))):
        if port is None or port == UNKNOWN:
            continue
        held = port_holder(client, str(s["bind_address"]), int(port), owners)
        if held:
            found.append(
                (
                    field,
                    located(
                        where,
                        field,
                        f"port {int(port)} on {s['bind_address']} is taken by {held}",
                        f"set {field} to a free port",
                    ),
                )
            )
    return found


def _refuse_collisions(props: dict[str, Any], owners: set[str]) -> None:
    """Right before creating: a holder that appeared since `check` stops us, nothing of it is touched."""
    found = collisions(props, owners)
    if found:
        raise RuntimeError("\n".join(line for _, line in found))


def _run(props: dict[str, Any], owners: set[str] | None = None) -> Any:
    s = props["settings"]  # numbers come back from Pulumi state as floats
    ports = {f"{int(s['proxy_port'])}/tcp": (s["bind_address"], int(s["host_port"]))}
    if s.get("grpc_host_port") is not None:
        ports[f"{int(s['proxy_grpc_port'])}/tcp"] = (s["bind_address"], int(s["grpc_host_port"]))
    remove_named(props["container_name"], owners or owners_of(props))
    container = docker_client().containers.run(
        props["image"],
        ["nginx", "-c", NGINX_CONF, "-g", "daemon off;"],
        name=props["container_name"],
        detach=True,
        user=PROXY_UID,
        network=props["network_name"],
        ports=ports,
        volumes={props["config_dir"]: {"bind": CONFIG_MOUNT, "mode": "ro"}},
        labels={**owner_labels(props["owner"]), "org.modelstack.role": "proxy"},
        tmpfs={"/tmp": "rw,noexec,nosuid,size=64m"},
        mem_limit=128 * 1024 * 1024,
        pids_limit=64,
        **HARDENED,
    )
    _wait_running(container)
    return container


def _wait_running(container: Any, timeout_s: float = 15.0) -> None:
    """Running, and still running a moment later (nginx exits at once on a bad config)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        container.reload()
        if container.status == "running" and container.attrs["RestartCount"] == 0:
            time.sleep(0.5)
            container.reload()
            if container.status == "running" and container.attrs["RestartCount"] == 0:
                return
        if container.status in ("exited", "dead") or container.attrs["RestartCount"] > 0:
            break
        time.sleep(0.1)
    logs = container.logs(tail=20).decode(errors="replace")
    raise RuntimeError(f"proxy {container.name} did not start (status {container.status}):\n{logs}")


def remove_named(name: str, owners: set[str]) -> None:
    """Remove the container `name` when it is this stack's (one of its owner labels); never a stranger's."""
    client = docker_client()
    for container in client.containers.list(all=True, filters={"name": f"^/{name}$"}):
        if is_ours(container.labels, owners):
            container.remove(force=True)


class Proxy(Resource, module="docker", name="Proxy"):
    container_id: pulumi.Output[str]
    container_name: pulumi.Output[str]
    config_dir: pulumi.Output[str]

    def __init__(
        self,
        name: str,
        *,
        owner: pulumi.Input[str],
        container_name: pulumi.Input[str],
        image: str,
        network_name: pulumi.Input[str],
        settings: dict[str, Any],
        config_dir: pulumi.Input[str],
        nginx_conf: str,
        parked_upstream: str,
        where: dict[str, str] | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "owner": owner,
            "container_name": container_name,
            "image": image,
            "network_name": network_name,
            "settings": settings,
            "config_dir": config_dir,
            "nginx_conf": nginx_conf,
            "parked_upstream": parked_upstream,
            "container_id": None,
            "where": where or {},
        }
        super().__init__(ProxyProvider(), name, props, opts)

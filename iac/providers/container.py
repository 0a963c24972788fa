"""Container: one hardened model server, published on the host, health-gated.

`create` returns only once the server answers /readyz (the model is loaded and a warm-up
inference ran). An update that never gets ready puts the previous container back and fails.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from iac.providers.common import OWNER_LABEL, changed, docker_client, owner_labels

READY_TIMEOUT_S = 90
DIFF_KEYS = ("image_id", "container_name", "network_name", "settings", "owner")


class ContainerProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        container_id = _start_ready(props)
        return CreateResult(id_=container_id, outs={**props, "container_id": container_id})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # Updated in place: the host port is fixed, so old and new cannot run side by side.
        return DiffResult(changes=bool(changed(olds, news, DIFF_KEYS)), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        try:
            container_id = _start_ready(news)
        except Exception:
            _start_ready(olds)  # roll back to what served before, then report the failure
            raise
        return UpdateResult(outs={**news, "container_id": container_id})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        import docker.errors

        try:
            container = docker_client().containers.get(id_)
        except docker.errors.NotFound:
            return ReadResult(None, {})  # removed by hand: drift, `up` recreates it
        if container.status not in ("running", "restarting"):
            return ReadResult(None, {})
        return ReadResult(id_, props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        _remove_named(props["container_name"])


def _start_ready(props: dict[str, Any]) -> str:
    _remove_named(props["container_name"])
    container = _run(props)
    try:
        _wait_ready(container, props)
    except Exception:
        container.remove(force=True)
        raise
    return str(container.id)


def _run(props: dict[str, Any]) -> Any:
    s = props["settings"]  # numbers come back from Pulumi state as floats
    return docker_client().containers.run(
        props["image_id"],
        name=props["container_name"],
        detach=True,
        network=props["network_name"],
        ports={f"{int(s['port'])}/tcp": (s["bind_address"], int(s["host_port"]))},
        labels={**owner_labels(props["owner"]), "org.modelstack.role": "model"},
        read_only=True,
        tmpfs={"/tmp": "rw,noexec,nosuid,size=16m"},
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        mem_limit=int(s["memory_bytes"]),
        nano_cpus=int(s["cpus"] * 1e9),
        pids_limit=256,
        restart_policy={"Name": "unless-stopped"},
    )


def _wait_ready(container: Any, props: dict[str, Any]) -> None:
    s = props["settings"]
    host = "127.0.0.1" if s["bind_address"] == "0.0.0.0" else s["bind_address"]
    url = f"http://{host}:{int(s['host_port'])}/readyz"
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        container.reload()
        if container.status in ("exited", "dead"):
            break
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.25)
    logs = container.logs(tail=30).decode(errors="replace")
    raise RuntimeError(f"container {props['container_name']} did not become ready at {url} "
                       f"within {READY_TIMEOUT_S} s (status {container.status}); last log lines:\n{logs}")


def _remove_named(name: str) -> None:
    client = docker_client()
    for container in client.containers.list(all=True, filters={"name": f"^/{name}$"}):
        if OWNER_LABEL in container.labels:
            container.remove(force=True)


class Container(Resource, module="docker", name="Container"):
    container_id: pulumi.Output[str]

    def __init__(self, name: str, *, owner: str, container_name: str, image_id: pulumi.Input[str],
                 network_name: pulumi.Input[str], settings: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        props = {
            "owner": owner, "container_name": container_name, "image_id": image_id,
            "network_name": network_name, "settings": settings, "container_id": None,
        }
        super().__init__(ContainerProvider(), name, props, opts)

"""Replicas: N hardened model containers behind the proxy, rolled out health-gated.

A rollout starts the new replicas beside the old ones, waits until each answers /readyz and a
warm-up inference, points the proxy at them (graceful reload), then drains and stops the old
ones. A version that never gets ready is removed again and the rollout fails, while the old
version keeps serving. Every step is idempotent, so an interrupted rollout converges on the
next `pulumi up`.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.error
import urllib.request
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from iac.deploy.dynamic import HARDENED, OWNER_LABEL, changed, docker_client, owner_labels
from iac.deploy.targets.docker.collisions import owners_of
from iac.deploy.targets.docker.proxy import reload, write_config
from iac.deploy.targets.docker.settings import replica_address

ROLE = "org.modelstack.role"
VERSION = "org.modelstack.version"
DRAIN_S = 1.0  # old nginx workers finish their requests to the old replicas in this time
DIFF_KEYS = ("version", "replicas", "healthy")


class RolloutError(RuntimeError):
    pass


class ReplicasProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        names, _ = rollout(props)
        return CreateResult(id_=props["base_name"], outs={**props, "replica_names": names, "healthy": True})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=bool(changed(olds, news, DIFF_KEYS)), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        names, record = rollout(news, owners_of(olds, news), stable=olds.get("replica_names"))
        if record is not None and record["outcome"] != "promoted":
            # Rolled back: the old version serves as the state says (so `refresh` changes nothing), the
            # record says why; the next `up` diffs the new version against it and tries again.
            return UpdateResult(outs={**olds, "healthy": True, "last_rollout": record})
        return UpdateResult(
            outs={**news, "replica_names": names, "healthy": True, "last_rollout": record or olds.get("last_rollout")}
        )

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        # Drift (a replica removed or stopped by hand) marks the state unhealthy, so the next
        # `up` diffs against healthy=True and rolls the same version out again.
        running = {c.name for c in _replicas(owners_of(props)) if c.status == "running"}
        healthy = set(props.get("replica_names") or []) <= running
        state = {**props, "healthy": healthy}
        return ReadResult(id_, state, inputs={k: v for k, v in state.items() if k not in ("replica_names",)})

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        for container in _replicas(owners_of(props)):
            container.remove(force=True)


def version_of(image_id: str, settings: dict[str, Any], api_key: str | None) -> str:
    """What makes replicas interchangeable: same image, same limits, same key."""
    blob = json.dumps(
        {"image": image_id, "settings": settings, "key": hashlib.sha256((api_key or "").encode()).hexdigest()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def rollout(
    props: dict[str, Any], owners: set[str] | None = None, stable: list[str] | None = None
) -> tuple[list[str], dict[str, Any] | None]:
    """Roll `props`' version out; returns the replicas serving after it and, for a judged rollout (canary
    or shadow), its record. `owners`: the owner labels this stack's replicas may carry (the state's old one
    too, so replicas made before a stack id are retired, not orphaned); `stable`: the replicas the state
    says serve now."""
    version = props["version"]
    wanted = [f"{props['base_name']}-{version}-{i}" for i in range(int(props["replicas"]))]
    existing = {c.name: c for c in _replicas(owners or owners_of(props))}
    started = []
    for name in wanted:
        current = existing.get(name)
        if current is not None and current.status == "running":
            continue  # left by an interrupted rollout, or a scale-up: keep it
        if current is not None:
            current.remove(force=True)
        started.append(_run(props, name))
    try:
        client = docker_client()
        _wait_ready([client.containers.get(name) for name in wanted], props)
    except RolloutError:
        for container in started:
            container.remove(force=True)
        raise
    serving = [
        name
        for name in (stable or [])
        if name not in wanted and name in existing and existing[name].status == "running"
    ]
    record = None
    if (props.get("rollout") or {}).get("strategy", "rolling") != "rolling" and serving:
        from iac.deploy.targets.docker.canary import judged_rollout

        try:
            record = judged_rollout(props, serving, wanted)
        except BaseException:
            _remove(started)
            raise
        if record["outcome"] != "promoted":
            time.sleep(DRAIN_S)  # requests the new version took before the switch back finish
            _remove([client.containers.get(name) for name in wanted])
            return serving, record
    _switch_proxy(props, wanted)
    _retire([c for name, c in existing.items() if name not in wanted], props["settings"].get("stop_grace_s", 10))
    return wanted, record


def _remove(containers: list[Any]) -> None:
    for container in containers:
        container.remove(force=True)


def _run(props: dict[str, Any], name: str) -> Any:
    s = props["settings"]  # numbers come back from Pulumi state as floats
    # The key reaches the server as an environment variable of the container, never the image.
    env = {props["api_key_env"]: props["api_key"]} if props.get("api_key_env") else {}
    return docker_client().containers.run(
        props["image_id"],
        name=name,
        detach=True,
        network=props["network_name"],
        # No published port: only the proxy is reachable from outside; the rollout probes a
        # replica at its address on the stack's network (this host routes to docker networks).
        environment=env,
        labels={**owner_labels(props["owner"]), ROLE: "model", VERSION: props["version"]},
        tmpfs={"/tmp": "rw,noexec,nosuid,size=16m"},
        mem_limit=int(s["memory_bytes"]),
        nano_cpus=int(float(s["cpus"]) * 1e9),
        pids_limit=int(s["pids"]),
        **HARDENED,
    )


def _wait_ready(containers: list[Any], props: dict[str, Any]) -> None:
    pending = {c.name: c for c in containers}
    deadline = time.monotonic() + float(props["ready_timeout_s"])
    while pending and time.monotonic() < deadline:
        for name, container in list(pending.items()):
            container.reload()
            if container.status in ("exited", "dead"):
                continue
            if _ready(container, props):
                del pending[name]
        if pending:
            time.sleep(0.2)
    if pending:
        name, container = next(iter(pending.items()))
        container.reload()
        state = container.attrs.get("State", {})
        detail = "killed: out of memory" if state.get("OOMKilled") else f"status {container.status}"
        logs = container.logs(tail=15).decode(errors="replace").strip()
        raise RolloutError(
            f"new version {props['version']} did not become ready within {props['ready_timeout_s']:.0f} s "
            f"({name}: {detail}); the previous version keeps serving.\nlast log lines of {name}:\n{logs}"
        )


def _ready(container: Any, props: dict[str, Any]) -> bool:
    """/readyz answers 200 and one warm-up request succeeds: the serving family's own (e.g. one generated
    token), else an inference on zeros."""
    address = replica_address(container, props["network_name"])
    if not address:
        return False
    base = f"http://{address}:{int(props['settings']['port'])}"
    headers = {"Content-Type": "application/json"}
    if props.get("api_key"):
        headers["Authorization"] = f"Bearer {props['api_key']}"
    path = f"/v1/models/{props['model_name']}:predict"
    if props.get("warm_up"):  # the serving family's own request, its body JSON text
        path, zeros = props["warm_up"]["path"], json.loads(props["warm_up"]["body"])
    else:
        zeros = warm_up_body(props["inputs"])
    try:
        with urllib.request.urlopen(f"{base}/readyz", timeout=2) as response:
            if response.status != 200:
                return False
        request = urllib.request.Request(f"{base}{path}", data=json.dumps(zeros).encode(), headers=headers)
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


def warm_up_body(inputs: list[list[Any]]) -> dict[str, Any]:
    """A V1 body of one zero sample of each input ([name, shape, dtype]), by name: integers for an
    integer input, a text for a text input. The same form for one input or several."""
    sample = {name: _zeros(shape, 0 if dtype.startswith(("int", "uint")) else 0.0) for name, shape, dtype in inputs}
    return {"instances": [sample]}


def _zeros(shape: list[Any], zero: float = 0.0) -> Any:
    if not shape:  # a text input: one string per sample
        return "warm-up"
    if len(shape) == 1:
        return [zero] * int(shape[0])
    return [_zeros(shape[1:], zero) for _ in range(int(shape[0]))]


def _switch_proxy(props: dict[str, Any], names: list[str]) -> None:
    from iac.build.proxy_config import PARKED, mirror_conf, split_conf, upstream_conf

    settings = props["settings"]
    write_config(props["config_dir"], "upstream.conf", upstream_conf(names, int(settings["port"])), keep_existing=False)
    # All of it to `names`: whatever a canary or shadow left (an interrupted `up`) is undone in the same reload.
    write_config(props["config_dir"], "split.conf", split_conf(), keep_existing=False)
    write_config(props["config_dir"], "mirror.conf", mirror_conf(False), keep_existing=False)
    if settings.get("grpc_port") is not None:  # the proxy publishes gRPC: the same replicas at their gRPC port
        write_config(
            props["config_dir"],
            "upstream-grpc.conf",
            upstream_conf(names, int(settings["grpc_port"])),
            keep_existing=False,
        )
    reload(props["proxy_name"])
    write_config(props["config_dir"], "upstream-candidate.conf", PARKED, keep_existing=False)
    _wait_serving(props)


def _wait_serving(props: dict[str, Any], timeout_s: float = 15.0) -> None:
    """The proxy answers with the new version (new nginx workers are up)."""
    url = f"http://{props['probe_host']}:{int(props['settings']['host_port'])}/v1/models/{props['model_name']}/metadata"
    headers = {"Authorization": f"Bearer {props['api_key']}"} if props.get("api_key") else {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as response:
                if props["artifact_sha256"] in response.read().decode():
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    raise RolloutError(f"the proxy did not serve version {props['version']} within {timeout_s:.0f} s of the switch")


def _retire(containers: list[Any], grace_s: float = 10) -> None:
    """Stop the old replicas: SIGTERM, then `grace_s` (sized for the model's longest requests, e.g.
    streams) before Docker kills one that has not finished."""
    if not containers:
        return
    time.sleep(DRAIN_S)
    for container in containers:
        try:
            container.stop(timeout=int(grace_s))  # SIGTERM: the server finishes in-flight requests
        finally:
            container.remove(force=True)


def _replicas(owners: set[str]) -> list[Any]:
    """This stack's model containers: those labelled with one of its owners, never another stack's."""
    client = docker_client()
    return [
        c
        for owner in sorted(owners)
        for c in client.containers.list(all=True, filters={"label": [f"{OWNER_LABEL}={owner}", f"{ROLE}=model"]})
    ]


class Replicas(Resource, module="docker", name="Replicas"):
    replica_names: pulumi.Output[list]
    version: pulumi.Output[str]
    last_rollout: pulumi.Output[Any]  # the record of the last canary or shadow rollout (None before one)

    def __init__(self, name: str, *, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(
            ReplicasProvider(), name, {**props, "replica_names": None, "healthy": True, "last_rollout": None}, opts
        )

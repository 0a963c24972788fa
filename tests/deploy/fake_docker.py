"""An in-memory stand-in for the docker SDK client: the subset the deploy providers and the healer call.

Containers, networks and images live in dicts; errors are the SDK's own (`docker.errors.NotFound`,
`ImageNotFound`, `APIError`), so the providers' except clauses are exercised as they are against a
real engine. Every container runs the moment it is created and gets an address on its network.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import docker.errors

_ids = itertools.count(1)


def _new_id() -> str:
    return f"{next(_ids):064x}"


def _labels_match(labels: dict[str, str], wanted: str | list[str]) -> bool:
    for item in [wanted] if isinstance(wanted, str) else wanted:
        key, has_value, value = item.partition("=")
        if key not in labels or (has_value and labels[key] != value):
            return False
    return True


@dataclass
class ExecResult:
    exit_code: int
    output: bytes


@dataclass(eq=False)
class FakeImage:
    id: str
    tags: list[str]
    labels: dict[str, str]

    @property
    def attrs(self) -> dict[str, Any]:
        return {"Id": self.id, "RepoTags": self.tags, "Config": {"Labels": self.labels}}


@dataclass(eq=False)
class FakeNetwork:
    client: FakeDocker
    id: str
    name: str
    labels: dict[str, str]

    @property
    def attrs(self) -> dict[str, Any]:
        return {"Id": self.id, "Name": self.name, "Labels": self.labels}

    def remove(self) -> None:
        self.client.networks.items.pop(self.id, None)


@dataclass(eq=False)
class FakeContainer:
    client: FakeDocker
    id: str
    name: str
    image: FakeImage | None
    labels: dict[str, str]
    kwargs: dict[str, Any]
    status: str = "running"
    health: str = "healthy"
    restart_count: int = 0
    oom_killed: bool = False
    execs: list[list[str]] = field(default_factory=list)
    exec_exit_code: int = 0

    @property
    def attrs(self) -> dict[str, Any]:
        network = self.kwargs.get("network")
        address = f"172.30.0.{int(self.id, 16) % 250 + 2}" if self.status == "running" else ""
        return {
            "Id": self.id,
            "Name": f"/{self.name}",
            "State": {
                "Status": self.status,
                "Running": self.status == "running",
                "OOMKilled": self.oom_killed,
                "Health": {"Status": self.health},
            },
            "RestartCount": self.restart_count,
            "NetworkSettings": {"Networks": {network: {"IPAddress": address}} if network else {}},
            "Config": {
                "Labels": self.labels,
                "Env": [f"{k}={v}" for k, v in (self.kwargs.get("environment") or {}).items()],
            },
            "HostConfig": {
                **{k: v for k, v in self.kwargs.items() if k not in ("environment", "labels", "name")},
                # the engine's shape of `ports={"8080/tcp": (address, port)}`
                "PortBindings": {
                    inner: [{"HostIp": host[0], "HostPort": str(host[1])}]
                    for inner, host in (self.kwargs.get("ports") or {}).items()
                },
            },
        }

    def reload(self) -> None:
        if self.id not in self.client.containers.items:
            raise docker.errors.NotFound(f"No such container: {self.name}")

    def start(self) -> None:
        self.reload()
        self.status = "running"

    def stop(self, timeout: int = 10) -> None:
        self.status = "exited"
        self.client.emit("die", self)

    def kill(self, signal: str = "SIGKILL") -> None:
        self.status = "exited"
        self.client.emit("die", self)

    def remove(self, force: bool = False) -> None:
        if self.status == "running" and not force:
            raise docker.errors.APIError(f"cannot remove running container {self.name}: stop it first or force")
        self.client.containers.items.pop(self.id, None)

    def logs(self, tail: int | str = "all") -> bytes:
        return b"fake log line\n"

    def exec_run(self, cmd: list[str], user: str = "", **_: Any) -> ExecResult:
        self.execs.append(list(cmd))
        return ExecResult(self.exec_exit_code, b"" if self.exec_exit_code == 0 else b"nginx: [emerg] bad config")


class Containers:
    def __init__(self, client: FakeDocker) -> None:
        self.client = client
        self.items: dict[str, FakeContainer] = {}

    def run(
        self,
        image: str,
        command: Any = None,
        *,
        name: str,
        detach: bool = True,
        labels: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> FakeContainer:
        assert detach, "providers run containers detached"
        if any(c.name == name for c in self.items.values()):
            raise docker.errors.APIError(f'Conflict. The container name "/{name}" is already in use')
        network = kwargs.get("network")
        if network and not self.client.networks.list(names=[network]):
            raise docker.errors.NotFound(f"network {network} not found")
        container = FakeContainer(
            self.client,
            _new_id(),
            name,
            self.client.images.items.get(image),
            dict(labels or {}),
            {"image": image, "command": command, **kwargs},
        )
        self.items[container.id] = container
        return container

    def get(self, id_or_name: str) -> FakeContainer:
        for container in self.items.values():
            if id_or_name in (container.id, container.name):
                return container
        raise docker.errors.NotFound(f"No such container: {id_or_name}")

    def list(self, all: bool = False, filters: dict[str, Any] | None = None) -> list[FakeContainer]:
        filters = filters or {}
        found = []
        for container in self.items.values():
            if not all and container.status != "running":
                continue
            if "label" in filters and not _labels_match(container.labels, filters["label"]):
                continue
            if "name" in filters and not re.search(filters["name"], f"/{container.name}"):
                continue
            if "status" in filters and container.status != filters["status"]:
                continue
            found.append(container)
        return found


class Networks:
    def __init__(self, client: FakeDocker) -> None:
        self.client = client
        self.items: dict[str, FakeNetwork] = {}

    def create(self, name: str, driver: str = "bridge", labels: dict[str, str] | None = None, **_: Any) -> FakeNetwork:
        network = FakeNetwork(self.client, _new_id(), name, dict(labels or {}))
        self.items[network.id] = network
        return network

    def get(self, id_or_name: str) -> FakeNetwork:
        for network in self.items.values():
            if id_or_name in (network.id, network.name):
                return network
        raise docker.errors.NotFound(f"network {id_or_name} not found")

    def list(self, names: list[str] | None = None, filters: dict[str, Any] | None = None) -> list[FakeNetwork]:
        found = list(self.items.values())
        if names is not None:
            found = [n for n in found if n.name in names]
        if filters and "label" in filters:
            found = [n for n in found if _labels_match(n.labels, filters["label"])]
        return found


class Images:
    def __init__(self, client: FakeDocker) -> None:
        self.client = client
        self.items: dict[str, FakeImage] = {}
        self.builds: list[dict[str, Any]] = []

    def add(self, tag: str, labels: dict[str, str] | None = None) -> FakeImage:
        image = FakeImage(f"sha256:{_new_id()}", [tag], dict(labels or {}))
        self.items[image.id] = image
        return image

    def build(
        self, *, path: str, tag: str, labels: dict[str, str] | None = None, pull: bool = False, **kwargs: Any
    ) -> tuple[FakeImage, Iterator[dict[str, str]]]:
        assert not pull, "nothing is pulled: base images are local"
        self.builds.append({"path": path, "tag": tag, "labels": labels, **kwargs})
        return self.add(tag, labels), iter([{"stream": "built"}])

    def get(self, id_or_tag: str) -> FakeImage:
        for image in self.items.values():
            if id_or_tag == image.id or id_or_tag in image.tags:
                return image
        raise docker.errors.ImageNotFound(f"No such image: {id_or_tag}")

    def list(self, filters: dict[str, Any] | None = None) -> list[FakeImage]:
        found = list(self.items.values())
        if filters and "label" in filters:
            found = [i for i in found if _labels_match(i.labels, filters["label"])]
        return found

    def remove(self, image: str, force: bool = False, noprune: bool = False) -> None:
        found = self.get(image)
        if not force and any(c.image is found for c in self.client.containers.items.values()):
            raise docker.errors.APIError(f"conflict: unable to remove {image}: image is being used by a container")
        self.items.pop(found.id, None)


class FakeDocker:
    """`docker.DockerClient`'s shape: `.containers`, `.networks`, `.images`, `.events()`."""

    def __init__(self) -> None:
        self.containers = Containers(self)
        self.networks = Networks(self)
        self.images = Images(self)
        self.events_log: list[dict[str, Any]] = []
        self.host_ports_in_use: set[int] = set()  # held by a process of the host that is not a container

    def emit(self, action: str, container: FakeContainer) -> None:
        self.events_log.append(
            {
                "Type": "container",
                "Action": action,
                "status": action,
                "id": container.id,
                "Actor": {"ID": container.id, "Attributes": {"name": container.name, **container.labels}},
            }
        )

    def events(self, decode: bool = False, filters: dict[str, Any] | None = None, **_: Any) -> Iterator[dict[str, Any]]:
        """What happened so far and matches `filters` (type, event, label); then the stream ends."""
        filters = filters or {}
        actions = filters.get("event")
        actions = [actions] if isinstance(actions, str) else actions
        for event in list(self.events_log):
            if actions and event["Action"] not in actions:
                continue
            if "label" in filters and not _labels_match(event["Actor"]["Attributes"], filters["label"]):
                continue
            yield event

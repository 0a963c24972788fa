"""Who already holds a name or a host port this stack wants, found before anything is created.

Docker names and host ports are global to the engine, so another stack, another checkout of this
project or something that is not modelstack's at all may hold them. The network takes the stack's
own name when its plain one is held (`network.py`), and the containers' names follow it; a host port
cannot move, and a container name may still be held by a stranger. A holder is this stack's only when it carries one of the stack's owner labels (see
`iac.deploy.identity`); anything else is a stranger: it is never removed or reused, and the user is
told who holds it and which field of model.yaml to change. The providers call these from `check`
(so `pulumi preview` reports the collision) and again right before they create (a holder that
appeared in between).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Collection
from typing import Any

from iac.deploy.dynamic import CHECKOUT_LABEL, OWNER_LABEL, UNKNOWN


def owners_of(*props: dict[str, Any] | None) -> set[str]:
    """The owner labels this stack's objects may carry: its current one and the one its state recorded
    before (a stack made before stack ids labelled its objects `<project>/<stack>/<service>`)."""
    return {p["owner"] for p in props if p and isinstance(p.get("owner"), str) and p["owner"] != UNKNOWN}


def is_ours(labels: dict[str, str] | None, owners: Collection[str]) -> bool:
    return (labels or {}).get(OWNER_LABEL) in owners


def holder(kind: str, name: str, labels: dict[str, str] | None) -> str:
    """`container modelstack-dev-digits-proxy of stack digits/dev/digits@3f2a9c10 (checkout /home/a/proj)`."""
    labels = labels or {}
    owner = labels.get(OWNER_LABEL)
    if owner is None:
        return f"{kind} {name} (not made by modelstack)"
    checkout = labels.get(CHECKOUT_LABEL)
    return f"{kind} {name} of stack {owner}" + (f" (checkout {checkout})" if checkout else "")


def network_holder(client: Any, name: str, owners: Collection[str]) -> str | None:
    """Who holds the network `name`, when it is not this stack; None when it is free or ours."""
    for network in client.networks.list(names=[name]):
        if network.name == name and not is_ours(network.attrs.get("Labels") if network.attrs else None, owners):
            return holder("network", name, network.attrs.get("Labels"))
    return None


def container_holder(client: Any, name: str, owners: Collection[str]) -> str | None:
    """Who holds the container name `name`, when it is not this stack; None when it is free or ours."""
    for container in client.containers.list(all=True, filters={"name": f"^/{name}$"}):
        if container.name == name and not is_ours(container.labels, owners):
            return holder("container", name, container.labels)
    return None


def port_holder(client: Any, bind_address: str, port: int, owners: Collection[str]) -> str | None:
    """Who holds host port `port` on `bind_address`, when it is not this stack; None when it is free or ours."""
    ours = False
    for container in client.containers.list():
        for address, published in published_ports(container):
            if published == port and _overlap(address, bind_address):
                if not is_ours(container.labels, owners):
                    return holder("container", container.name, container.labels)
                ours = True
    if ours:
        return None
    return None if host_port_free(bind_address, port) else "a process on this host that is not a container"


def published_ports(container: Any) -> list[tuple[str, int]]:
    """(host address, host port) of every port the container publishes."""
    bindings = (container.attrs.get("HostConfig") or {}).get("PortBindings") or {}
    return [
        (b.get("HostIp") or "0.0.0.0", int(b["HostPort"]))
        for entries in bindings.values()
        for b in entries or []
        if b.get("HostPort")
    ]


def _overlap(a: str, b: str) -> bool:
    return a == b or "0.0.0.0" in (a, b) or "" in (a, b)


def host_port_free(address: str, port: int) -> bool:
    """Nothing outside Docker listens there: a socket binds (and is closed again at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
        except OSError as exc:
            return exc.errno != errno.EADDRINUSE  # e.g. EACCES below 1024: Docker may still bind it
    return True


def located(where: dict[str, str], field: str, problem: str, fix: str) -> str:
    """One readable line: `model.yaml:40: deploy.host_port: <problem>; <fix>` (UserError's format)."""
    from iac.spec.errors import Problem

    return str(Problem(where.get(field, "model.yaml"), field, problem, fix))

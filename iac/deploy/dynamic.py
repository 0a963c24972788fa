"""What every docker-backed provider shares: the client, ownership labels, unknown checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

OWNER_LABEL = "org.modelstack.owner"  # "<project>/<stack>/<service>@<stack id>": what `destroy` sweeps
CHECKOUT_LABEL = "org.modelstack.checkout"  # the stack directory that made it: names the holder of a collision
UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # Pulumi's wire value for "not known until apply"


# Every container of a stack runs like this: nothing writable but its tmpfs, no capabilities,
# no privilege gain, and started again when it crashes (a `docker kill` is the healer's job).
HARDENED: dict[str, Any] = {
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "restart_policy": {"Name": "unless-stopped"},
}


def docker_client() -> Any:
    """The docker SDK client every provider calls; `client_factory` makes it (tests swap in a fake)."""
    return client_factory()


def _client_from_env() -> Any:
    import docker

    return docker.from_env(timeout=300)


client_factory: Callable[[], Any] = _client_from_env


def owner_labels(owner: str) -> dict[str, str]:
    import os

    # Providers run in the stack's directory (the Pulumi CLI starts them there).
    return {OWNER_LABEL: owner, CHECKOUT_LABEL: os.getcwd()}


def changed(olds: dict[str, Any], news: dict[str, Any], keys: tuple[str, ...]) -> list[str]:
    """The keys whose values differ; an unknown new value counts as a change."""
    return [k for k in keys if news.get(k) == UNKNOWN or olds.get(k) != news.get(k)]

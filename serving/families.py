"""Serving families: the one place where ``ServingConfig.task`` picks a model's runtime and routes.

A family is a module (imported only when its task is served, so the image's other runtimes
never load) that exposes:

* ``load(config) -> Served``: called on the loading thread; loads, checks and warms up the
  model. The server answers ``/healthz`` (and 503 on the rest) meanwhile.
* ``routes(config) -> tuple[Route, ...]``: the routes it adds to the common ones
  (``/healthz``, ``/readyz``, ``/metrics``, in ``serving.routes``).
* optionally ``check(data) -> list[str]``: problems with the raw serving.json that only this
  family knows about (each ``"<field>: <problem>; <fix>"``), reported with the config's own.
* optionally ``grpc_front(state, host, port)``: the gRPC front end it serves on ``grpc_port``.
  A family without one refuses a config that sets ``grpc_port``.

Nothing else in ``serving/`` branches on the task: a new family is one module and one line in
``FAMILIES``. This module stays light (no numpy) because ``serving.config`` imports it.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from serving.config import ServingConfig
    from serving.metrics import Metrics
    from serving.routes import Route
    from serving.state import ModelState

# task -> the module implementing it. "predict" (the default) is one forward pass over tensors
# or texts (Keras and Hugging Face encoders); the others each hold their own runtime.
FAMILIES: dict[str, str] = {
    "predict": "serving.predict",
    "text-generation": "serving.generation",
    "speech-recognition": "serving.speech",
}
DEFAULT_TASK = "predict"


class Served(Protocol):
    """A loaded, warmed-up model as the server's lifecycle drives it."""

    def start(self, loop: asyncio.AbstractEventLoop, metrics: Metrics) -> None:
        """On the loop thread, once, just before the server turns ready (schedulers, batchers)."""

    async def drain(self) -> None:
        """After the front ends stopped taking requests: finish what was already accepted."""

    def close(self) -> None:
        """Release threads and native resources; the process is about to exit."""

    def ready_fields(self) -> dict[str, Any]:
        """Extra fields for the ``ready`` log line (warm-up time, threads, batching, ...)."""


class GrpcFront(Protocol):
    """A gRPC front end as the lifecycle drives it (``serving.grpc_service.GrpcFrontEnd``)."""

    port: int

    async def start(self) -> int: ...

    async def stop(self, grace: float) -> bool: ...


class Family(Protocol):
    """What a family module exposes (module-level functions satisfy it)."""

    def load(self, config: ServingConfig) -> Served: ...

    def routes(self, config: ServingConfig) -> tuple[Route, ...]: ...


class FamilyUnavailable(ValueError):
    """The task is known but its module is not in this image (or not written yet)."""


def _module(task: str) -> ModuleType:
    try:
        path = FAMILIES[task]
    except KeyError:
        raise ValueError(f"task: must be one of {', '.join(FAMILIES)}, got {task!r}") from None
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as exc:
        if exc.name is not None and path.startswith(exc.name):
            raise FamilyUnavailable(
                f"task: {task!r} is not available in this server ({path} is missing); "
                f"serve it with an image built for that task"
            ) from exc
        raise


def family(task: str) -> Family:
    """The family serving ``task``; ValueError naming the field when there is none."""
    return cast("Family", _module(task))


def routes(config: ServingConfig) -> tuple[Route, ...]:
    """Every route the server answers for ``config``: the family's, then the common ones."""
    from serving.routes import COMMON_ROUTES

    return (*family(config.task).routes(config), *COMMON_ROUTES)


def check(task: str, data: Mapping[str, Any]) -> list[str]:
    """The family's problems with a raw serving.json (``task`` already known to be valid)."""
    try:
        module = _module(task)
    except FamilyUnavailable as exc:
        return [str(exc)]
    problems: list[str] = list(getattr(module, "check", lambda _: [])(data))
    if data.get("grpc_port") is not None and not hasattr(module, "grpc_front"):
        problems.append(f"grpc_port: task {task!r} has no gRPC service; remove grpc_port")
    return problems


def grpc_front(state: ModelState, host: str, port: int) -> GrpcFront:
    """The family's gRPC front end (``check`` made sure it has one when ``grpc_port`` is set)."""
    make = _module(state.config.task).grpc_front
    return cast("GrpcFront", make(state, host, port))

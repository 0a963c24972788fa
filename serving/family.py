"""The serving-family contract: what a task's module gives the server, and how the server uses it.

A family module (registered in ``serving.families``) exposes:

* ``load(config) -> Served`` (``serving.state.Served``): called on the loading thread; loads,
  checks and warms up the model. The server answers ``/healthz`` (and 503 on the rest) meanwhile.
* ``routes(config) -> tuple[Route, ...]``: the routes it adds to the common ones
  (``/healthz``, ``/readyz``, ``/metrics``, in ``serving.routes``).
* optionally ``check(data) -> list[str]``: problems with the raw serving.json that only this
  family knows about (each ``"<field>: <problem>; <fix>"``), reported with the config's own.
* optionally ``grpc_front(state, host, port) -> GrpcFront``: the gRPC front end it serves on
  ``grpc_port``. A family without one refuses a config that sets ``grpc_port``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, cast

from serving import families
from serving.routes import COMMON_ROUTES, Route

if TYPE_CHECKING:
    from serving.config import ServingConfig
    from serving.state import ModelState, Served


class GrpcFront(Protocol):
    """A gRPC front end as the lifecycle drives it (``serving.grpc_service.GrpcFrontEnd``)."""

    port: int

    async def start(self) -> int: ...

    async def stop(self, grace: float) -> bool: ...


class Family(Protocol):
    """What a family module exposes (module-level functions satisfy it)."""

    def load(self, config: ServingConfig) -> Served: ...

    def routes(self, config: ServingConfig) -> tuple[Route, ...]: ...


def family(task: str) -> Family:
    """The family serving ``task``; ValueError naming the field when there is none."""
    return cast("Family", families.module(task))


def routes(config: ServingConfig) -> tuple[Route, ...]:
    """Every route the server answers for ``config``: the family's, then the common ones."""
    return (*family(config.task).routes(config), *COMMON_ROUTES)


def grpc_front(state: ModelState, host: str, port: int) -> GrpcFront:
    """The family's gRPC front end (``families.check`` made sure it has one when ``grpc_port`` is set)."""
    make = families.module(state.config.task).grpc_front
    return cast("GrpcFront", make(state, host, port))

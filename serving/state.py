"""What the routes share: the config, the API key, readiness, the served model and metrics.

The served model is whatever the task's family loaded (a ``Served``); each
family's routes reach their own kind of model through a typed accessor of their own
(``serving.batched.batched`` for predict).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from serving.config import ServingConfig
from serving.errors import ClientError, show
from serving.metrics import Metrics

SERVER_VERSION = "0.4.0"


class Served(Protocol):
    """A loaded, warmed-up model as the server's lifecycle drives it (what a family's ``load``
    returns, ``serving.family``)."""

    def start(self, loop: asyncio.AbstractEventLoop, metrics: Metrics) -> None:
        """On the loop thread, once, just before the server turns ready (schedulers, batchers)."""

    async def drain(self) -> None:
        """After the front ends stopped taking requests: finish what was already accepted."""

    def close(self) -> None:
        """Release threads and native resources; the process is about to exit."""

    def ready_fields(self) -> dict[str, Any]:
        """Extra fields for the ``ready`` log line (warm-up time, threads, batching, ...)."""


class ModelState:
    """The served model's state: ``ready`` turns True once, after loading and warm-up."""

    def __init__(self, config: ServingConfig, api_key: str | None = None) -> None:
        self.config = config
        self.api_key = api_key.encode() if api_key else None
        self.served: Served | None = None
        self.ready = False
        self.metrics = Metrics(ready=lambda: self.ready)
        self._memo: dict[str, bytes] = {}

    def set_ready(self, served: Served, loop: asyncio.AbstractEventLoop) -> None:
        """Serve ``served`` from now on (called on the loop thread)."""
        served.start(loop, self.metrics)
        self.served = served
        self._memo.clear()
        self.ready = True  # set last: routes read `ready` and then use the fields above

    def memo(self, key: str, make: Callable[[], bytes]) -> bytes:
        """A response body computed once (per loaded model) and reused."""
        body = self._memo.get(key)
        if body is None:
            body = self._memo[key] = make()
        return body

    def require_ready(self) -> Served:
        """The served model, or a 503 (with ``Retry-After``) while it is still loading."""
        if not self.ready or self.served is None:
            raise ClientError(
                503,
                f"model {show(self.config.model_name)} is still loading; retry when /readyz answers 200",
                headers=(("Retry-After", "1"),),
            )
        return self.served

    async def drain(self) -> None:
        """Finish what the served model already accepted (the front ends have stopped)."""
        if self.served is not None:
            await self.served.drain()

    def close(self) -> None:
        if self.served is not None:
            self.served.close()

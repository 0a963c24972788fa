"""What the routes share: the config, the API key, readiness, the batcher and metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from serving.batching import Batcher
from serving.config import ServingConfig
from serving.errors import ClientError, encode_json, show
from serving.metrics import Metrics

if TYPE_CHECKING:
    from serving.runtime import Runtime

SERVER_VERSION = "0.4.0"


class ModelState:
    """The served model's state: ``ready`` turns True once, after loading and warm-up."""

    def __init__(self, config: ServingConfig, api_key: str | None = None) -> None:
        self.config = config
        self.api_key = api_key.encode() if api_key else None
        self.model: Runtime | None = None
        self.batcher: Batcher | None = None
        self.ready = False
        self.metrics = Metrics(ready=lambda: self.ready)
        self._memo: dict[str, bytes] = {}

    def set_ready(self, model: Runtime, loop: asyncio.AbstractEventLoop, sample_cost_s: float | None = None) -> None:
        """Serve ``model`` from now on (called on the loop thread)."""
        self.model = model
        self._memo.clear()
        self.batcher = Batcher(
            loop, model.predict, self.config.max_batch_size, self.config.max_latency_ms,
            self.metrics, sample_cost_s=sample_cost_s,
        )
        self.ready = True  # set last: routes read `ready` and then use the fields above

    def memo(self, key: str, make: Callable[[], bytes]) -> bytes:
        """A response body computed once (per loaded model) and reused."""
        body = self._memo.get(key)
        if body is None:
            body = self._memo[key] = make()
        return body

    def model_document(self, key: str, build: Callable[[ServingConfig, Runtime], dict[str, Any]]) -> bytes:
        """A metadata document about the loaded model, JSON-encoded once and reused; 503 while loading."""
        self.require_ready()
        model = self.model
        assert model is not None
        return self.memo(key, lambda: encode_json(build(self.config, model)).encode())

    def require_ready(self) -> Batcher:
        """The batcher, or a 503 (with ``Retry-After``) while the model is still loading."""
        if not self.ready or self.batcher is None:
            raise ClientError(
                503,
                f"model {show(self.config.model_name)} is still loading; retry when /readyz "
                "answers 200",
                headers=(("Retry-After", "1"),),
            )
        return self.batcher

    def close(self) -> None:
        if self.batcher is not None:
            self.batcher.close()

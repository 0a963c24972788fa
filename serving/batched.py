"""The predict family's loaded model: one runtime behind the dynamic batcher.

V1, V2 (HTTP and gRPC) and the several-input routes reach the runtime and its batcher through
``batched(state)``, which answers 503 while the model loads; the lifecycle drives the object
through ``serving.state.Served`` without knowing it is this one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from serving.batching import Batcher
from serving.config import ServingConfig
from serving.errors import encode_json

if TYPE_CHECKING:
    from serving.metrics import Metrics
    from serving.runtime import Runtime
    from serving.state import ModelState


class BatchedModel:
    """A runtime, its warm-up figures, and (once started on the loop) its batcher."""

    def __init__(self, runtime: Runtime, config: ServingConfig, warm_up_ms: float = 0.0,
                 sample_cost_s: float | None = None) -> None:
        self.runtime = runtime
        self.config = config
        self.warm_up_ms = warm_up_ms
        self.sample_cost_s = sample_cost_s
        self._batcher: Batcher | None = None

    @property
    def batcher(self) -> Batcher:
        assert self._batcher is not None, "start() runs before the model is served"
        return self._batcher

    def start(self, loop: asyncio.AbstractEventLoop, metrics: Metrics) -> None:
        self._batcher = Batcher(
            loop, self.runtime.predict, self.config.max_batch_size, self.config.max_latency_ms,
            metrics, sample_cost_s=self.sample_cost_s,
        )

    async def drain(self) -> None:
        if self._batcher is not None:  # answers for clients that left are still computed
            await self._batcher.drain()

    def close(self) -> None:
        if self._batcher is not None:
            self._batcher.close()

    def ready_fields(self) -> dict[str, Any]:
        config = self.config
        return {
            "warm_up_ms": round(self.warm_up_ms, 3), "runtime": config.resolved_runtime,
            "threads": config.threads, "max_batch_size": config.max_batch_size,
            "max_latency_ms": config.max_latency_ms,
            "sample_ms": round((self.sample_cost_s or 0.0) * 1000, 4), "inference_on": self.batcher.mode,
            "batching": "on" if config.batching_enabled else "off",
        }


def batched(state: ModelState) -> BatchedModel:
    """The served model and its batcher, or a 503 (with ``Retry-After``) while it is still loading."""
    return cast(BatchedModel, state.require_ready())


def model_document(state: ModelState, key: str, build: Callable[[ServingConfig, Runtime], dict[str, Any]]) -> bytes:
    """A metadata document about the loaded model, JSON-encoded once and reused; 503 while loading."""
    runtime = batched(state).runtime
    return state.memo(key, lambda: encode_json(build(state.config, runtime)).encode())

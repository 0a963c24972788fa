"""Dynamic batching: request threads queue their samples, one worker thread runs them together.

A request thread calls ``Batcher.submit(batch)`` and blocks until its own rows come back. The
worker takes the oldest queued request, then keeps collecting until the batch holds
``max_batch_size`` samples or ``max_latency_ms`` has passed since that oldest request arrived
(with 0 it takes whatever queued while the previous batch ran, and never waits; a request that
finds the batcher idle then runs at once in its own thread), runs one model
invocation on the concatenation, and hands each caller exactly its slice of the output, in
order. A request larger than ``max_batch_size`` runs as a batch of its own; requests are never
split or reordered. If the invocation fails, every caller in that batch gets the exception.

With ``max_latency_ms`` 0 and a model whose single-sample inference (measured at start-up) takes
less than ``HANDOFF_COST_S``, requests always run inline, one at a time on the interpreter: for
such a model a queue hand-off costs more than any batch saves (measured: the digits model lost
~20% throughput at concurrency 64 when queued).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from serving.metrics import Metrics

# Roughly what handing a request to the worker thread and back costs (two thread wake-ups
# and GIL hand-offs); a model whose single-sample inference is faster is run inline.
HANDOFF_COST_S = 0.0002


class _Pending:
    """One caller's rows; ``done`` is a lock held until the result (or error) is set."""

    __slots__ = ("rows", "enqueued", "result", "error", "done")

    def __init__(self, rows: np.ndarray) -> None:
        self.rows = rows
        self.enqueued = time.perf_counter()
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = threading.Lock()
        self.done.acquire()  # released by the worker: cheaper to wait on than an Event


class BatcherStopped(RuntimeError):
    """submit() after stop()."""


class Batcher:
    """Runs ``predict`` on batches of queued requests in one worker thread."""

    def __init__(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_latency_ms: float,
        metrics: Metrics | None = None,
        sample_cost_s: float | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self._predict = predict
        self.max_batch_size = max_batch_size
        self.max_latency = max_latency_ms / 1000.0
        self._metrics = metrics
        # A model this fast is never worth a queue: waiting for the running inference costs
        # less than handing the request to another thread and back.
        self.bypass = sample_cost_s is not None and sample_cost_s < HANDOFF_COST_S
        self._queue: deque[_Pending] = deque()
        self._queued_rows = 0
        self._cond = threading.Condition(threading.Lock())
        self._stopping = False
        self._running = 0  # batches executing now (the worker's, or one inline)
        self._worker = threading.Thread(target=self._run, name="batcher", daemon=True)
        self._worker.start()

    def submit(self, rows: np.ndarray) -> np.ndarray:
        """Queue ``rows`` (first axis = samples), wait, return the model's output for them."""
        with self._cond:
            if self._stopping:
                raise BatcherStopped("the batcher is stopped")
            # Idle and not asked to wait: run in the caller's thread, skipping two thread
            # hand-offs. Requests arriving meanwhile queue up and form the next batch.
            inline = self.max_latency == 0 and not self._queue and (not self._running or self.bypass)
            if inline:
                self._running += 1
            else:
                item = _Pending(rows)
                self._queue.append(item)
                self._queued_rows += len(rows)
                self._cond.notify()
        if inline:
            started = time.perf_counter()
            try:
                output = self._predict(rows)
            finally:
                with self._cond:
                    self._running -= 1
            if self._metrics is not None:
                self._metrics.inference(len(rows), time.perf_counter() - started, (0.0,))
            return output
        item.done.acquire()
        if item.error is not None:
            raise item.error
        assert item.result is not None
        return item.result

    def stop(self, timeout: float = 5.0) -> None:
        """Run what is queued, then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._worker.join(timeout)

    def _take(self) -> list[_Pending] | None:
        """Wait for work and collect one batch; None when stopped and drained."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            if self.max_latency > 0:
                deadline = self._queue[0].enqueued + self.max_latency
                while self._queued_rows < self.max_batch_size and not self._stopping:
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            batch = [self._queue.popleft()]
            rows = len(batch[0].rows)
            while self._queue and rows + len(self._queue[0].rows) <= self.max_batch_size:
                item = self._queue.popleft()
                rows += len(item.rows)
                batch.append(item)
            self._queued_rows -= rows
            self._running += 1
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._execute(batch)
            finally:
                with self._cond:
                    self._running -= 1

    def _execute(self, batch: list[_Pending]) -> None:
        started = time.perf_counter()
        try:
            if len(batch) == 1:
                outputs: Any = [self._predict(batch[0].rows)]
            else:
                joined = self._predict(np.concatenate([item.rows for item in batch]))
                bounds = np.cumsum([len(item.rows) for item in batch])[:-1]
                outputs = np.split(joined, bounds)
        except BaseException as exc:  # each caller re-raises it in its own thread
            for item in batch:
                item.error = exc
                item.done.release()
            return
        finished = time.perf_counter()
        if self._metrics is not None:
            self._metrics.inference(
                sum(len(item.rows) for item in batch),
                finished - started,
                [started - item.enqueued for item in batch],
            )
        for item, output in zip(batch, outputs):
            item.result = output
            item.done.release()

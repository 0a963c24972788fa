"""Scoring and timing: the metric the spec names, Keras predictions, and time-bounded latency loops.

Latency loops are time-bounded: a warm-up, then as many calls as fit in the budget (at least
a floor count, at most a ceiling), so a slow baseline (Keras `model.predict`, ~ms a call)
and a fast artifact (µs a call) both finish quickly and both give a stable median.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

BATCH = 256
THROUGHPUT_BATCH = 32


# ----------------------------------------------------------------------------------- Keras
def keras_predict(model: Any, x: np.ndarray) -> np.ndarray:
    outputs = [
        np.asarray(first_output(model(keras_input(x[i : i + BATCH]), training=False))) for i in range(0, len(x), BATCH)
    ]
    return np.concatenate(outputs)


def keras_input(x: np.ndarray) -> Any:
    """What a Keras model takes: the array, or for several inputs (a structured array, one field
    per input) a dict of each input's tensor by name."""
    if x.dtype.names is None:
        return x
    return {name: np.ascontiguousarray(x[name]) for name in x.dtype.names}


def first_output(out: Any) -> Any:
    if isinstance(out, dict):
        return next(iter(out.values()))
    if isinstance(out, (list, tuple)):
        return out[0]
    return out


# ---------------------------------------------------------------------------------- metrics
def accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores, axis=-1) == labels))


def score(metric: str, outputs: np.ndarray, labels: np.ndarray, top_k: int = 5) -> float:
    """The metric's value; higher is better for accuracy and top_k, lower for mae."""
    if metric == "accuracy":
        return accuracy(outputs, labels.astype(np.int64))
    if metric == "top_k":
        k = min(top_k, outputs.shape[-1])
        top = np.argsort(-outputs, axis=-1)[:, :k]
        return float(np.mean(np.any(top == labels.astype(np.int64)[:, None], axis=-1)))
    if metric == "mae":
        return float(np.mean(np.abs(outputs.reshape(len(labels), -1) - labels.reshape(len(labels), -1))))
    raise ValueError(metric)


# ---------------------------------------------------------------------------------- latency
@dataclass(frozen=True)
class Latency:
    p50_us: float
    p99_us: float
    throughput_per_s: float
    calls: int


def measure(
    single: Callable[[], Any],
    batch: Callable[[], Any],
    batch_size: int = THROUGHPUT_BATCH,
    budget_s: float = 0.4,
    min_calls: int = 20,
    max_calls: int = 5000,
) -> Latency:
    """p50/p99 of single-sample calls, and samples per second at `batch_size`."""
    times = _timed(single, budget_s, min_calls, max_calls)
    batch_times = _timed(batch, budget_s / 2, max(3, min_calls // 4), max_calls // 4)
    return Latency(
        p50_us=round(float(np.percentile(times, 50)) * 1e6, 2),
        p99_us=round(float(np.percentile(times, 99)) * 1e6, 2),
        throughput_per_s=round(batch_size / float(np.median(batch_times)), 1),
        calls=len(times),
    )


def _timed(call: Callable[[], Any], budget_s: float, min_calls: int, max_calls: int) -> np.ndarray:
    warm_end = time.perf_counter() + budget_s / 8
    for i in range(max_calls):  # warm-up: caches, allocations, thread pools
        call()
        if i >= 2 and time.perf_counter() > warm_end:
            break
    times: list[float] = []
    end = time.perf_counter() + budget_s
    while len(times) < max_calls and (len(times) < min_calls or time.perf_counter() < end):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return np.asarray(times)

"""Prometheus metrics in the text exposition format (version 0.0.4), without a client library.

The serving image carries only the standard library, numpy and the runtime, so the few metrics
the server exports are kept here: counters and histograms with a fixed label set, updated under
one lock (a handful of integer additions per request) and rendered on ``GET /metrics``.

Exported series (``route`` is a route kind such as ``v1_predict`` or ``v2_infer``, never the raw
path, so the label set stays small)::

    modelstack_requests_total{route,status}                counter
    modelstack_request_duration_seconds{route}             histogram (request read -> response written)
    modelstack_batch_size                                  histogram (samples per model invocation)
    modelstack_inference_duration_seconds                  histogram (time inside the runtime)
    modelstack_batch_queue_seconds                         histogram (batching: wait before a batch runs)
    modelstack_model_ready                                 gauge (1 once the model is warmed up)
    modelstack_log_lines_dropped_total                     counter (stderr did not take them in time)
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable, Sequence

from serving.logs import dropped_lines

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Histogram:
    """Counts per upper bound (not cumulative until rendered), a sum and a count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last slot is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:  # caller holds the registry lock
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def render(self, name: str, labels: str = "") -> list[str]:
        lines = []
        cumulative = 0
        sep = "," if labels else ""
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            cumulative += count
            le = "+Inf" if bound == float("inf") else _number(bound)
            lines.append(f'{name}_bucket{{{labels}{sep}le="{le}"}} {cumulative}')
        suffix = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{suffix} {_number(self.sum)}")
        lines.append(f"{name}_count{suffix} {self.count}")
        return lines


class Metrics:
    """The server's metrics; every method is thread-safe."""

    def __init__(self, ready: Callable[[], bool] = lambda: False) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, int], int] = {}
        self._durations: dict[str, Histogram] = {}
        self._batch = Histogram(BATCH_BUCKETS)
        self._inference = Histogram(LATENCY_BUCKETS)
        self._queue = Histogram(LATENCY_BUCKETS)
        self._ready = ready
        self._sections: list[Callable[[], list[str]]] = []

    def add_section(self, render: Callable[[], list[str]]) -> None:
        """A family's own series (e.g. speech's audio seconds), rendered after these."""
        self._sections.append(render)

    def request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered request and observe its duration."""
        key = (route, status)
        with self._lock:
            requests = self._requests
            requests[key] = requests.get(key, 0) + 1
            histogram = self._durations.get(route)
            if histogram is None:
                histogram = self._durations[route] = Histogram(LATENCY_BUCKETS)
            histogram.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            histogram.sum += seconds
            histogram.count += 1

    def inference(self, batch_size: int, seconds: float, queued_seconds: Sequence[float] = ()) -> None:
        with self._lock:
            batch, inference, queue = self._batch, self._inference, self._queue
            batch.counts[bisect_left(BATCH_BUCKETS, batch_size)] += 1
            batch.sum += batch_size
            batch.count += 1
            inference.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            inference.sum += seconds
            inference.count += 1
            counts = queue.counts
            for wait in queued_seconds:
                counts[bisect_left(LATENCY_BUCKETS, wait)] += 1
                queue.sum += wait
            queue.count += len(queued_seconds)

    def render(self) -> bytes:
        """The text exposition of every series."""
        with self._lock:
            lines = [
                "# HELP modelstack_requests_total HTTP requests answered, by route kind and status.",
                "# TYPE modelstack_requests_total counter",
            ]
            for (route, status), count in sorted(self._requests.items()):
                lines.append(f'modelstack_requests_total{{route="{route}",status="{status}"}} {count}')
            lines += [
                "# HELP modelstack_request_duration_seconds Time from request line to response written.",
                "# TYPE modelstack_request_duration_seconds histogram",
            ]
            for route, histogram in sorted(self._durations.items()):
                lines += histogram.render("modelstack_request_duration_seconds", f'route="{route}"')
            lines += [
                "# HELP modelstack_batch_size Samples per model invocation.",
                "# TYPE modelstack_batch_size histogram",
                *self._batch.render("modelstack_batch_size"),
                "# HELP modelstack_inference_duration_seconds Time spent in the model runtime per invocation.",
                "# TYPE modelstack_inference_duration_seconds histogram",
                *self._inference.render("modelstack_inference_duration_seconds"),
                "# HELP modelstack_batch_queue_seconds Time a request waited in the batching queue.",
                "# TYPE modelstack_batch_queue_seconds histogram",
                *self._queue.render("modelstack_batch_queue_seconds"),
                "# HELP modelstack_model_ready 1 once the model is loaded and warmed up.",
                "# TYPE modelstack_model_ready gauge",
                f"modelstack_model_ready {1 if self._ready() else 0}",
                "# HELP modelstack_log_lines_dropped_total Log lines dropped because stderr did not take them.",
                "# TYPE modelstack_log_lines_dropped_total counter",
                f"modelstack_log_lines_dropped_total {dropped_lines()}",
            ]
        for section in self._sections:  # outside the lock: each section holds its own
            lines += section()
        return ("\n".join(lines) + "\n").encode()


def _number(value: float) -> str:
    return repr(float(value))

"""One rollout window judged: the new version against the old, side by side, from their own figures.

Error rate and p99 latency come from each replica's `/metrics` (request counters and the request
duration histogram of the prediction routes), read at the start and the end of the window; prediction
agreement comes from live request bodies of the window replayed to one replica of each version
(`replay.py`). Too few samples is *inconclusive*, never a pass. Pure functions: no Docker, no HTTP.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

PREDICT_ROUTES = ("v1_predict", "v2_infer")  # the routes live traffic uses; probes and metadata are left out
Outcome = Literal["pass", "fail", "inconclusive"]

_SAMPLE = re.compile(r"^(?P<name>[a-z_]+)\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True)
class Counters:
    """Prediction requests of one version (summed over its replicas) since its replicas started."""

    requests: int = 0
    errors: int = 0  # 5xx
    bounds: tuple[float, ...] = ()  # the duration histogram's upper bounds (seconds), +Inf left out
    counts: tuple[int, ...] = ()  # cumulative counts per bound, then the total (+Inf)

    def __add__(self, other: Counters) -> Counters:
        bounds = self.bounds or other.bounds
        if not bounds:  # neither has a histogram yet (replicas that answered no prediction): none in the sum
            return Counters(self.requests + other.requests, self.errors + other.errors)
        counts = tuple(a + b for a, b in zip(_pad(self.counts, bounds), _pad(other.counts, bounds), strict=True))
        return Counters(self.requests + other.requests, self.errors + other.errors, bounds, counts)

    def since(self, before: Counters) -> Counters:
        """What happened between `before` and now; a replica restarted in between counts from zero."""
        if self.requests < before.requests:
            return self
        bounds = self.bounds or before.bounds
        if not bounds:
            return Counters(self.requests - before.requests, max(0, self.errors - before.errors))
        counts = tuple(
            max(0, a - b) for a, b in zip(_pad(self.counts, bounds), _pad(before.counts, bounds), strict=True)
        )
        return Counters(self.requests - before.requests, max(0, self.errors - before.errors), bounds, counts)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def p99_ms(self) -> float | None:
        """The 99th percentile request duration, interpolated within its histogram bucket (as Prometheus
        does); None without requests."""
        if not self.counts or self.counts[-1] == 0:
            return None
        rank = 0.99 * self.counts[-1]
        lower, below = 0.0, 0
        for bound, cumulative in zip(self.bounds, self.counts, strict=False):
            if cumulative >= rank:
                share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
                return 1000 * (lower + (bound - lower) * share)
            lower, below = bound, cumulative
        return 1000 * lower  # in the +Inf bucket: the largest finite bound is what is known


def _pad(counts: tuple[int, ...], bounds: tuple[float, ...]) -> tuple[int, ...]:
    return counts or (0,) * (len(bounds) + 1)


def parse_metrics(text: str) -> Counters:
    """The prediction routes' counters of one replica's `/metrics` (Prometheus text format)."""
    requests = errors = 0
    buckets: dict[float, int] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if not match:
            continue
        labels = dict(_LABEL.findall(match["labels"]))
        if labels.get("route") not in PREDICT_ROUTES:
            continue
        value = int(float(match["value"]))
        if match["name"] == "modelstack_requests_total":
            requests += value
            errors += value if labels.get("status", "").startswith("5") else 0
        elif match["name"] == "modelstack_request_duration_seconds_bucket":
            le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
            buckets[le] = buckets.get(le, 0) + value
    bounds = tuple(sorted(b for b in buckets if b != math.inf))
    counts = tuple(buckets[b] for b in bounds) + (buckets.get(math.inf, 0),)
    return Counters(requests, errors, bounds, counts if buckets else ())


# -- agreement --------------------------------------------------------------------------------------

AgreementKind = Literal["top1", "cosine", "mae"]


def agreement_kind(metric: str) -> AgreementKind:
    """Classifiers (accuracy, top_k) agree on the top-1 class; embeddings by cosine; regressors by MAE."""
    return {"cosine": "cosine", "mae": "mae"}.get(metric, "top1")  # type: ignore[return-value]


def compare(kind: AgreementKind, stable: Sequence[Any], candidate: Sequence[Any]) -> list[float]:
    """One figure per instance: 1/0 for top-1 agreement, the cosine, or the mean absolute difference."""
    import numpy as np

    figures = []
    for s, c in zip(stable, candidate, strict=True):
        a, b = np.asarray(s, dtype=np.float64).ravel(), np.asarray(c, dtype=np.float64).ravel()
        if a.shape != b.shape:
            figures.append(0.0 if kind != "mae" else math.inf)
        elif kind == "top1":
            figures.append(float(_top1(a) == _top1(b)))
        elif kind == "cosine":
            norm = float(np.linalg.norm(a) * np.linalg.norm(b))
            figures.append(float(a @ b) / norm if norm else float(np.array_equal(a, b)))
        else:
            figures.append(float(np.mean(np.abs(a - b))) if a.size else 0.0)
    return figures


def _top1(values: Any) -> int:
    """The predicted class: the largest score, or a single sigmoid score read as class 1 above 0.5."""
    return int(values[0] > 0.5) if values.size == 1 else int(values.argmax())


@dataclass(frozen=True)
class Agreement:
    kind: AgreementKind
    samples: int  # instances compared (a failed candidate answer counts as a disagreement)
    value: float | None  # mean of `compare`'s figures; None without samples

    @classmethod
    def of(cls, kind: AgreementKind, figures: Sequence[float]) -> Agreement:
        return cls(kind, len(figures), sum(figures) / len(figures) if figures else None)


# -- thresholds and the verdict ---------------------------------------------------------------------


@dataclass(frozen=True)
class Thresholds:
    max_error_rate_increase: float
    max_p99_ratio: float
    agreement: float  # least top-1 share or cosine, or largest MAE (see `kind`)
    kind: AgreementKind
    min_samples: int

    @classmethod
    def of(cls, analysis: dict[str, Any], metric: str, stable_figure: float) -> Thresholds:
        """The spec's `deploy.rollout.analysis`; agreement defaults from the stable version's prep figure:
        two models each right on a share `a` of inputs agree on at least `2a - 1`, and two regressors each
        `m` off the truth differ by at most `2m` on average."""
        kind = agreement_kind(metric)
        written = {
            "top1": analysis.get("min_agreement"),
            "cosine": analysis.get("min_cosine"),
            "mae": analysis.get("max_mae"),
        }[kind]
        default = 2 * stable_figure if kind == "mae" else max(0.0, 2 * stable_figure - 1)
        return cls(
            float(analysis["max_error_rate_increase"]),
            float(analysis["max_p99_ratio"]),
            float(default if written is None else written),
            kind,
            int(analysis["min_samples"]),
        )


@dataclass(frozen=True)
class Window:
    stable: Counters
    candidate: Counters  # live requests it answered (canary) or was copied (shadow)
    agreement: Agreement
    replay_errors: int = 0  # replayed requests the candidate failed or timed out on


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    metric: str = ""
    candidate: str = ""
    stable: str = ""
    threshold: str = ""
    samples: int = 0
    figures: dict[str, Any] = field(default_factory=dict)

    def line(self, step: str) -> str:
        """`step 1 (10%): error rate 1.000 (stable 0.000), threshold <= 0.010, 120 samples`."""
        if self.outcome == "pass":
            return f"{step}: passed ({self.samples} samples)"
        return (
            f"{step}: {self.outcome if self.outcome == 'inconclusive' else 'failed'} on {self.metric}: "
            f"candidate {self.candidate}, stable {self.stable}, threshold {self.threshold}, {self.samples} samples"
        )


def judge(window: Window, limits: Thresholds) -> Verdict:
    """The first failing check (errors, agreement, latency), else inconclusive on too few samples, else a pass."""
    cand, stable = window.candidate, window.stable
    errors = cand.errors + window.replay_errors
    requests = cand.requests + window.replay_errors
    cand_rate = errors / requests if requests else 0.0
    figures = {
        "requests": cand.requests,
        "stable_requests": stable.requests,
        "error_rate": round(cand_rate, 4),
        "stable_error_rate": round(stable.error_rate, 4),
        "p99_ms": _round(cand.p99_ms()),
        "stable_p99_ms": _round(stable.p99_ms()),
        "agreement": _round(window.agreement.value, 4),
        "agreement_samples": window.agreement.samples,
    }
    # A failure is a failure however few requests showed it: waiting would only fail more clients.
    if (
        requests
        and cand_rate > stable.error_rate + limits.max_error_rate_increase
        and errors >= min(limits.min_samples, 5)
    ):
        return Verdict(
            "fail",
            "error rate",
            f"{cand_rate:.3f}",
            f"{stable.error_rate:.3f}",
            f"<= stable + {limits.max_error_rate_increase:g}",
            requests,
            figures,
        )
    agreed = window.agreement
    if agreed.value is not None and agreed.samples >= limits.min_samples:
        bad = agreed.value > limits.agreement if limits.kind == "mae" else agreed.value < limits.agreement
        if bad:
            name = {"top1": "top-1 agreement", "cosine": "cosine agreement", "mae": "mean absolute difference"}[
                limits.kind
            ]
            sign = "<=" if limits.kind == "mae" else ">="
            return Verdict(
                "fail",
                name,
                f"{agreed.value:.3f}",
                "1.000" if limits.kind != "mae" else "0.000",
                f"{sign} {limits.agreement:.3f}",
                agreed.samples,
                figures,
            )
    cand_p99, stable_p99 = cand.p99_ms(), stable.p99_ms()
    enough = min(cand.requests, stable.requests) >= limits.min_samples
    if enough and cand_p99 is not None and stable_p99 and cand_p99 > limits.max_p99_ratio * stable_p99:
        return Verdict(
            "fail",
            "p99 latency",
            f"{cand_p99:.1f} ms",
            f"{stable_p99:.1f} ms",
            f"<= {limits.max_p99_ratio:g} x stable",
            cand.requests,
            figures,
        )
    if cand.requests < limits.min_samples:
        return Verdict(
            "inconclusive",
            "requests",
            str(cand.requests),
            str(stable.requests),
            f">= {limits.min_samples}",
            cand.requests,
            figures,
        )
    if agreed.samples < limits.min_samples:
        return Verdict(
            "inconclusive",
            "replayed samples",
            str(agreed.samples),
            "-",
            f">= {limits.min_samples}",
            agreed.samples,
            figures,
        )
    if stable.requests < limits.min_samples:
        return Verdict(
            "inconclusive",
            "stable requests",
            str(cand.requests),
            str(stable.requests),
            f">= {limits.min_samples}",
            stable.requests,
            figures,
        )
    return Verdict("pass", samples=cand.requests, figures=figures)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)

"""Judging a rollout window: /metrics parsing, p99 from the histogram, agreement, thresholds, verdicts."""

from __future__ import annotations

import pytest

from iac.deploy.rollout.analysis import (
    Agreement,
    Counters,
    Thresholds,
    Window,
    agreement_kind,
    compare,
    judge,
    parse_metrics,
)

BOUNDS = (0.0005, 0.001, 0.0025, 0.005, 0.01)
ANALYSIS = {
    "max_error_rate_increase": 0.01,
    "max_p99_ratio": 2.0,
    "min_agreement": None,
    "min_cosine": None,
    "max_mae": None,
    "min_samples": 50,
    "inconclusive": "fail",
    "max_holds": 2,
}


def metrics(ok: int, errors: int, buckets: tuple[int, ...], route: str = "v1_predict") -> str:
    """A replica's /metrics as serving/metrics.py renders it (cumulative buckets)."""
    lines = [
        f'modelstack_requests_total{{route="{route}",status="200"}} {ok}',
        f'modelstack_requests_total{{route="{route}",status="500"}} {errors}',
        'modelstack_requests_total{route="readyz",status="200"} 999',
    ]
    for bound, count in zip((*BOUNDS, "+Inf"), buckets, strict=True):
        lines.append(f'modelstack_request_duration_seconds_bucket{{route="{route}",le="{bound}"}} {count}')
    lines.append('modelstack_request_duration_seconds_bucket{route="readyz",le="+Inf"} 999')
    return "\n".join(["# TYPE modelstack_requests_total counter", *lines]) + "\n"


def test_metrics_count_the_prediction_routes_only_and_sum_over_replicas() -> None:
    one = parse_metrics(metrics(90, 10, (0, 50, 90, 100, 100, 100)))
    two = parse_metrics(metrics(100, 0, (0, 0, 50, 100, 100, 100), route="v2_infer"))
    assert (one.requests, one.errors, one.bounds) == (100, 10, BOUNDS)
    both = one + two
    assert (both.requests, both.errors, both.counts) == (200, 10, (0, 50, 140, 200, 200, 200))
    assert both.since(one).counts == two.counts
    assert one.since(both) == one  # counters went down: a restarted replica counts from zero


def test_replicas_that_answered_no_prediction_yet_add_up_with_those_that_did() -> None:
    """Fresh pods (probes only: no histogram of a prediction route) summed first, then a busy one."""
    idle = parse_metrics('modelstack_requests_total{route="readyz",status="200"} 3\n')
    busy = parse_metrics(metrics(90, 10, (0, 50, 90, 100, 100, 100)))
    total = Counters() + idle + idle + busy
    assert (total.requests, total.counts) == (100, busy.counts)
    assert (Counters() + idle).since(Counters() + idle) == Counters()
    assert total.since(Counters() + idle).counts == busy.counts


def test_p99_interpolates_in_its_bucket() -> None:
    fast = parse_metrics(metrics(100, 0, (0, 100, 100, 100, 100, 100)))
    assert fast.p99_ms() == pytest.approx(0.5 + 0.5 * 0.99)  # 99th of 100 in (0.5 ms, 1 ms]
    slow = parse_metrics(metrics(100, 0, (0, 0, 0, 100, 100, 100)))
    assert slow.p99_ms() == pytest.approx(2.5 + 2.5 * 0.99)
    assert Counters().p99_ms() is None


def test_agreement_per_kind() -> None:
    assert [agreement_kind(m) for m in ("accuracy", "top_k", "cosine", "mae")] == ["top1", "top1", "cosine", "mae"]
    assert compare("top1", [[0.1, 0.9], [0.8, 0.2], [0.7]], [[0.2, 0.8], [0.1, 0.9], [0.6]]) == [1.0, 0.0, 1.0]
    assert compare("cosine", [[1, 0]], [[1, 0]]) == [1.0] and compare("cosine", [[1, 0]], [[0, 1]]) == [0.0]
    assert compare("mae", [[1.0, 2.0]], [[1.5, 2.5]]) == [0.5]
    assert compare("top1", [[0.1, 0.9]], [[0.1, 0.2, 0.7]]) == [0.0]  # another shape never agrees


def test_thresholds_default_from_the_stable_prep_figure() -> None:
    assert Thresholds.of(ANALYSIS, "accuracy", 0.97).agreement == pytest.approx(0.94)
    assert Thresholds.of(ANALYSIS, "mae", 0.1).agreement == pytest.approx(0.2)
    assert Thresholds.of({**ANALYSIS, "min_agreement": 0.9}, "accuracy", 0.97).agreement == 0.9


def window(cand_ok: int, cand_err: int, cand_buckets: tuple[int, ...], agreed: list[float]) -> Window:
    stable = parse_metrics(metrics(900, 0, (0, 900, 900, 900, 900, 900)))
    candidate = parse_metrics(metrics(cand_ok, cand_err, cand_buckets))
    return Window(stable, candidate, Agreement.of("top1", agreed))


LIMITS = Thresholds.of(ANALYSIS, "accuracy", 0.97)
FAST = (0, 100, 100, 100, 100, 100)


def test_a_good_candidate_passes() -> None:
    verdict = judge(window(100, 0, FAST, [1.0] * 100), LIMITS)
    assert verdict.outcome == "pass" and verdict.samples == 100


def test_errors_fail_with_both_values_the_threshold_and_the_samples() -> None:
    verdict = judge(window(0, 100, FAST, [0.0] * 10), LIMITS)
    assert (verdict.outcome, verdict.metric, verdict.candidate, verdict.stable, verdict.samples) == (
        "fail",
        "error rate",
        "1.000",
        "0.000",
        100,
    )
    assert verdict.line("step 1/2 (10% of requests)") == (
        "step 1/2 (10% of requests): failed on error rate: candidate 1.000, stable 0.000, "
        "threshold <= stable + 0.01, 100 samples"
    )


def test_wrong_predictions_fail_on_agreement() -> None:
    verdict = judge(window(100, 0, FAST, [1.0] * 10 + [0.0] * 90), LIMITS)
    assert (verdict.outcome, verdict.metric, verdict.candidate, verdict.threshold) == (
        "fail",
        "top-1 agreement",
        "0.100",
        ">= 0.940",
    )


def test_a_slower_candidate_fails_on_p99() -> None:
    verdict = judge(window(100, 0, (0, 0, 0, 100, 100, 100), [1.0] * 100), LIMITS)
    assert (verdict.outcome, verdict.metric) == ("fail", "p99 latency")


def test_too_few_samples_is_inconclusive_never_a_pass() -> None:
    assert judge(window(0, 0, (0, 0, 0, 0, 0, 0), []), LIMITS).outcome == "inconclusive"
    assert judge(window(20, 0, (0, 20, 20, 20, 20, 20), [1.0] * 20), LIMITS).outcome == "inconclusive"
    assert judge(window(100, 0, FAST, [1.0] * 10), LIMITS).metric == "replayed samples"

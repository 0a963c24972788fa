"""Log timestamps: UTC ISO-8601 with milliseconds, the same with the per-millisecond cache warm or cold."""

from __future__ import annotations

import datetime

from serving import logs


def _expected(at: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(at * 1000) / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_timestamps_match_the_clock_across_millisecond_and_second_boundaries() -> None:
    moments = [
        0.0,
        0.0004,
        0.001,
        0.999,
        1.0,
        59.9995,
        60.0,
        1_764_633_599.999,
        1_764_633_600.0,
        1_764_633_600.0005,
        1_764_633_600.5,
        1_764_633_600.5004,
        1_764_633_601.25,
    ]
    for at in moments + moments[::-1]:  # forward, then backward: the cache must not leak a stale value
        assert logs.timestamp(at) == _expected(at), at

"""The gate, the objective and the candidate list: pure logic, no TensorFlow."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelprep.families import family
from modelprep.families.keras.variants import CATALOG, NAMES, candidates
from modelprep.family import Quality
from modelprep.report import Measure
from modelprep.select import choose, gated, miss_problems

ACCURACY = Quality("accuracy")
MAE = Quality("mae", lower_is_better=True, percent=False)
GENTLE = ("litert-float16", "litert-dynamic", "litert-float32")


def _entry(name: str, size: int, p50: float, acc: float, eligible: bool = True, **extra: Any) -> Measure:
    return Measure(
        name=name,
        runtime="litert",
        technique="ptq",
        quantization="int8",
        size_bytes=size,
        gzip_bytes=size,
        metric="accuracy",
        accuracy=acc,
        latency_p50_us=p50,
        latency_p99_us=p50,
        throughput_per_s=1.0,
        latency_calls=1,
        threads=1,
        eligible=eligible,
        **extra,
    )


def _chosen(entries: list[Measure], objective: str, allowed: float) -> str | None:
    marked, name, _why = choose(entries, objective, allowed)
    assert [e.name for e in marked if e.chosen] == ([name] if name else [])
    return name


def test_objective_chooses_smallest_fastest_or_balanced_and_never_a_failure() -> None:
    entries = gated(
        [
            _entry("big-fast", 1000, 10.0, 0.95),
            _entry("small-slow", 100, 100.0, 0.95),
            _entry("middle", 200, 15.0, 0.95),
            _entry("tiny-but-wrong", 10, 1.0, 0.50),
            _entry("tinier-onnx", 5, 0.5, 0.95, eligible=False),
        ],
        baseline=0.96,
        quality=ACCURACY,
        allowed=0.02,
    )
    assert [e.passed_gate for e in entries] == [True, True, True, False, True]
    assert _chosen(entries, "smallest", 0.02) == "small-slow"
    assert _chosen(entries, "fastest", 0.02) == "big-fast"
    # balanced: log2(200/100) + log2(15/10) = 1.58 beats log2(10) + 0 = 3.3 and 0 + log2(10) = 3.3
    assert _chosen(entries, "balanced", 0.02) == "middle"


def test_gate_error_lists_every_candidate_and_its_miss_at_the_given_line() -> None:
    entries = gated(
        [
            _entry("litert-int8", 100, 1.0, 0.90),
            _entry("litert-float16", 200, 2.0, 0.93),
            _entry(
                "onnx-float32",
                400,
                3.0,
                0.96,
                eligible=False,
                not_eligible_because="runtime onnx: name it in optimize.variants to allow it",
            ),
        ],
        baseline=0.96,
        quality=ACCURACY,
        allowed=0.01,
    )
    assert _chosen(entries, "smallest", 0.01) is None
    problems = miss_problems(entries, ACCURACY, 0.01, 0.96, None, where="stack/model.yaml:15", gentle=GENTLE)
    messages = [str(p) for p in problems]
    assert len(messages) == 3
    assert (
        "litert-int8 loses 6.00 points of accuracy (0.9600 → 0.9000), 5.00 points more than the allowed 1.00 points"
        in messages[0]
    )
    assert "litert-float16 loses 3.00 points" in messages[1] and "2.00 points more" in messages[1]
    assert "onnx-float32 passes the gate" in messages[2] and "optimize.variants" in messages[2]
    assert all(m.startswith("stack/model.yaml:15: optimize.max_accuracy_drop: ") and "; " in m for m in messages)


def test_mae_gate_counts_an_increase_as_the_loss() -> None:
    entries = gated([_entry("a", 1, 1.0, 0.30), _entry("b", 1, 1.0, 0.22)], baseline=0.20, quality=MAE, allowed=0.05)
    assert [e.passed_gate for e in entries] == [False, True]
    problem = miss_problems(entries[:1], MAE, 0.05, 0.20, None, where="model.yaml:9", gentle=GENTLE)[0]
    assert "raises mae by 0.1000 (0.2000 → 0.3000), 0.0500 more than the allowed 0.0500" in str(problem)


def test_a_lower_is_better_rate_is_gated_as_a_rise_and_chosen_among_the_passing() -> None:
    """Word error rate (speech) and KL divergence (LLMs) read like mae: a rise is the loss."""
    wer = Quality("wer", lower_is_better=True)
    entries = gated(
        [_entry("int8", 10, 1.0, 0.131), _entry("float16", 20, 2.0, 0.124), _entry("float32", 40, 3.0, 0.120)],
        baseline=0.120,
        quality=wer,
        allowed=0.005,
    )
    assert [e.passed_gate for e in entries] == [False, True, True]
    assert [e.accuracy_drop for e in entries] == [pytest.approx(0.011), pytest.approx(0.004), 0.0]
    assert _chosen(entries, "smallest", 0.005) == "float16"
    problem = miss_problems(entries[:1], wer, 0.005, 0.120, None, where="model.yaml:9", gentle=("float16",))[0]
    assert "int8 raises wer by 1.10 points (0.1200 → 0.1310), 0.60 points more than the allowed 0.50 points" in str(
        problem
    )
    assert "try gentler variants (float16)" in str(problem)


def test_metrics() -> None:
    from modelprep.evaluate import score

    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.3, 0.5]])
    labels = np.array([1, 1, 0])
    assert score("accuracy", scores, labels) == pytest.approx(1 / 3)
    assert score("top_k", scores, labels, top_k=2) == pytest.approx(2 / 3)
    assert score("mae", np.array([[1.0], [2.0]]), np.array([1.5, 2.0], np.float32)) == pytest.approx(0.25)


def test_candidates_default_legacy_restricted_and_all() -> None:
    default = candidates(None, None, False, False, False, False, False)
    assert [c.variant.name for c in default if c.eligible] == [
        "litert-float32",
        "litert-dynamic",
        "litert-float16",
        "litert-int8",
    ]
    assert [c.variant.name for c in default if not c.eligible] == ["onnx-float32", "onnx-dynamic", "onnx-static"]
    legacy = candidates(None, "int8", False, False, False, False, False)
    assert [(c.variant.name, c.eligible) for c in legacy] == [("litert-int8", True)]
    restricted = candidates(("onnx-static", "litert-int8"), None, False, False, False, False, False)
    assert [(c.variant.name, c.eligible) for c in restricted] == [("litert-int8", True), ("onnx-static", True)]
    everything = candidates(None, None, False, False, False, False, True)
    assert [c.variant.name for c in everything] == list(NAMES)
    configured = candidates(None, None, True, True, False, True, False)
    assert {"litert-int8-io", "pruned-float32", "pruned-int8", "qat-int8"} <= {c.variant.name for c in configured}
    assert not {"clustered-int8"} & {c.variant.name for c in configured}


def test_catalog_names_are_spec_variant_names_and_others_are_located_errors() -> None:
    from iac.spec.errors import UserError
    from iac.spec.models import Locations, VariantName
    from modelprep.request import PrepRequest

    spec_names = [v.value for v in VariantName]
    assert set(CATALOG) <= set(spec_names), "every variant prep makes is one a spec may name"
    request = PrepRequest(
        model_path="m.keras",
        calibration_path="c.npz",
        evaluation_path="e.npz",
        input_name="x",
        sample_shape=(4,),
        locations=Locations(file="model.yaml", lines={"optimize.variants": 17}),
    )
    for name in set(spec_names) - set(CATALOG):  # another model family's variants
        with pytest.raises(UserError) as info:
            family("keras").candidates(request.changed(optimize={"variants": [name]}))
        assert str(info.value).startswith(f"model.yaml:17: optimize.variants: {name} cannot be made from a Keras model")

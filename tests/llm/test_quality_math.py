"""The KL / agreement / perplexity tally against values worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from modelprep.families.llm.quality import Tally, log_softmax


def test_identical_distributions_have_no_divergence() -> None:
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((50, 30)).astype(np.float32)
    tally = Tally()
    tally.add(log_softmax(logits), logits, rng.integers(0, 30, 50))
    assert tally.mean_kl == pytest.approx(0.0, abs=1e-12)
    assert tally.agreement == 1.0 and tally.tokens == 50


def test_two_token_case_by_hand() -> None:
    # Source p = (0.75, 0.25); candidate q = (0.5, 0.5): KL = 0.75 ln 1.5 + 0.25 ln 0.5.
    ref = np.log(np.array([[0.75, 0.25]]))
    cand = np.log(np.array([[0.5, 0.5]]))
    tally = Tally()
    tally.add(ref, cand + 3.0, np.array([1]))  # logits need not be normalised
    assert tally.mean_kl == pytest.approx(0.75 * math.log(1.5) + 0.25 * math.log(0.5))
    assert tally.perplexity == pytest.approx(2.0)  # the candidate gave the real token 1/2


def test_agreement_counts_same_top_token() -> None:
    ref = log_softmax(np.array([[2.0, 1.0, 0.0], [0.0, 2.0, 1.0]]))
    cand = np.array([[1.5, 1.0, 0.0], [2.0, 0.0, 1.0]])
    tally = Tally()
    tally.add(ref, cand, np.array([0, 1]))
    assert tally.agreement == 0.5
    assert tally.kl_p99 > 0


def test_shapes_must_match() -> None:
    with pytest.raises(ValueError, match="shapes differ"):
        Tally().add(np.zeros((2, 3)), np.zeros((2, 4)), np.zeros(2, dtype=int))

"""How far a quantized language model moved from its source: llama.cpp's own yardsticks, in numpy.

Both models read the same held-out tokens; at every scored position we compare their full
next-token distributions: the KL divergence KL(source || candidate), whether their most likely
token is the same (top-1 agreement), and each model's perplexity on the real next token. A mean
KL alone hides a tail, so the 99th percentile is kept beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-probabilities, in float64 so that small KL values are not rounding noise."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    out: np.ndarray = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return out


@dataclass
class Tally:
    """Running sums over the scored positions; `add` one chunk at a time, read the figures at the end."""

    tokens: int = 0
    kl_sum: float = 0.0
    agree: int = 0
    nll_sum: float = 0.0  # the candidate's negative log-likelihood of the real next tokens
    kls: list[np.ndarray] = field(default_factory=list)

    def add(self, reference_logprobs: np.ndarray, logits: np.ndarray, targets: np.ndarray) -> None:
        """`reference_logprobs` and `logits`: (positions, vocabulary); `targets`: the token that came next at each."""
        if reference_logprobs.shape != logits.shape or logits.shape[0] != targets.shape[0]:
            raise ValueError(
                f"shapes differ: reference {reference_logprobs.shape}, candidate {logits.shape}, "
                f"targets {targets.shape}"
            )
        ref = np.asarray(reference_logprobs, dtype=np.float64)
        cand = log_softmax(logits)
        kl = np.maximum((np.exp(ref) * (ref - cand)).sum(axis=-1), 0.0)  # clip rounding below zero
        self.kls.append(kl)
        self.kl_sum += float(kl.sum())
        self.agree += int((ref.argmax(axis=-1) == cand.argmax(axis=-1)).sum())
        self.nll_sum += float(-cand[np.arange(len(targets)), targets].sum())
        self.tokens += len(targets)

    @property
    def mean_kl(self) -> float:
        return self.kl_sum / self.tokens if self.tokens else 0.0

    @property
    def kl_p99(self) -> float:
        return float(np.percentile(np.concatenate(self.kls), 99)) if self.kls else 0.0

    @property
    def agreement(self) -> float:
        return self.agree / self.tokens if self.tokens else 1.0

    @property
    def perplexity(self) -> float:
        return float(np.exp(self.nll_sum / self.tokens)) if self.tokens else float("nan")

"""Word error rate with one stated normalisation, computed by jiwer.

Normalisation (applied to reference and hypothesis alike): Unicode NFKC, lower case, hyphens and
slashes become spaces ("non-free" is two words either way), every other punctuation mark is
removed (apostrophes too: "users'" = "users"), runs of whitespace become one space. Nothing else:
no number spelling, no British/American spelling map, so "licence"/"license" counts as an error.

WER over a set is corpus-level: total edits over total reference words (jiwer over all pairs at
once), not the mean of per-clip rates, so a short clip weighs no more than its words.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

_SPLIT = re.compile(r"[-/‐–—]")
_PUNCT = re.compile(r"[^\w\s]")
_SPACE = re.compile(r"\s+")


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub("", _SPLIT.sub(" ", text))
    return _SPACE.sub(" ", text).strip()


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    """Corpus word error rate of ``hypotheses`` against ``references`` (after ``normalise``)."""
    import jiwer

    refs = [normalise(r) for r in references]
    hyps = [normalise(h) for h in hypotheses]
    kept = [(r, h) for r, h in zip(refs, hyps, strict=True) if r]  # jiwer refuses empty references
    if not kept:
        return 0.0
    return float(jiwer.wer([r for r, _ in kept], [h for _, h in kept]))

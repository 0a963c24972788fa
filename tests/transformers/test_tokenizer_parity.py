"""The server's tokenizer (the `tokenizers` library alone) gives the ids transformers' tokenizers give."""

from __future__ import annotations

from pathlib import Path

import pytest
from text_support import sentences

EXTRA = [
    "Hello, World!",
    "naïve café",
    "ÀÉÎÕÜ accents",
    "don't stop",
    "e-mail: a@b.c",
    "中文 字",
    "emoji 🙂 ok",
    "   leading and trailing   ",
    "tabs\tand\nnewlines",
    "UPPER lower MiXeD",
    "x" * 300,
    "42 is 6*7",
    "punctuation...!!!???",
    "quokka zebra unseenword",
    "a" + " b" * 200,
]


@pytest.mark.parametrize("max_length", [16, 128])
def test_ids_match_transformers_fast_and_slow_tokenizers(tiny_bert: Path, max_length: int) -> None:
    from transformers import BertTokenizer, BertTokenizerFast

    from serving.text import TextTokenizer

    texts = sentences(300, seed=7, longest=40) + EXTRA
    ours = TextTokenizer((tiny_bert / "tokenizer.json").read_text(), max_length, "truncate").encode(texts)
    fast = BertTokenizerFast.from_pretrained(str(tiny_bert))
    slow = BertTokenizer(str(tiny_bert / "vocab.txt"), do_lower_case=True)
    for tok in (fast, slow):
        theirs = tok(texts, truncation=True, max_length=max_length)["input_ids"]
        mismatches = [(t, a, b) for t, a, b in zip(texts, ours, theirs) if a != b]
        assert not mismatches, mismatches[:3]

"""Run a GGUF over held-out text with llama.cpp (llama-cpp-python) and compare it with the source.

The text is tokenized once, by the source model, and cut into windows of `window` tokens, each
starting with the BOS token when the model's tokenizer adds one. In each window only the positions after the
first quarter are scored, so every scored token has some context (llama.cpp's perplexity tool
scores the second half for the same reason). The source's log-probabilities at those positions
are kept in a float16 file on disk — 20,000 positions of a 49,152-token vocabulary are 2 GB, too
much to keep in memory or in the cache — and every candidate is compared with them window by
window.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelprep.families.llm.quality import Tally, log_softmax


@dataclass(frozen=True)
class Windows:
    tokens: np.ndarray  # (windows, window) token ids
    first: int  # the first scored position of each window

    @property
    def scored(self) -> int:
        """Positions scored per window: each predicts the token after it."""
        return int(self.tokens.shape[1]) - 1 - self.first

    @property
    def total(self) -> int:
        return self.scored * len(self.tokens)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """llama.cpp prints its load log on the C stderr even with verbose=False for some messages."""
    stderr = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(stderr, 2)
        os.close(stderr)


def load(path: Path, *, context: int, threads: int, logits_all: bool) -> Any:
    import llama_cpp

    with quiet():
        return llama_cpp.Llama(
            model_path=str(path),
            n_ctx=context,
            n_batch=min(context, 512),
            n_ubatch=min(context, 512),
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=logits_all,
            verbose=False,
        )


def windows(llm: Any, text: str, *, window: int, tokens: int) -> Windows:
    """Up to `tokens` scored positions of `text`, in windows of `window` tokens (fewer if the text runs out)."""
    ids = np.asarray(llm.tokenize(text.encode("utf-8"), add_bos=False, special=False), dtype=np.int32)
    # BOS only when the model's tokenizer adds one (tokenizer.ggml.add_bos_token), as it will when serving.
    prefix = llm.tokenize(b"", add_bos=True, special=False)
    has_bos = len(prefix) == 1
    bos = int(prefix[0]) if has_bos else -1
    body = window - 1 if has_bos else window
    first = window // 4
    per = window - 1 - first
    count = min(len(ids) // body, -(-tokens // per))
    rows = ids[: count * body].reshape(count, body)
    if has_bos:
        rows = np.concatenate([np.full((count, 1), bos, dtype=np.int32), rows], axis=1)
    return Windows(rows, first)


def window_logits(llm: Any, row: np.ndarray, first: int) -> np.ndarray:
    """The logits at the scored positions of one window: (positions, vocabulary), float32."""
    llm.reset()
    llm.eval(row.tolist())
    return np.array(llm.scores[first : len(row) - 1], dtype=np.float32)


class Reference:
    """The source model's log-probabilities at every scored position, on disk as float16."""

    def __init__(self, path: Path, model: Path, win: Windows, threads: int) -> None:
        self.path, self.windows = path, win
        llm = load(model, context=win.tokens.shape[1], threads=threads, logits_all=True)
        store = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=(win.total, llm.n_vocab()))
        # The source against its own stored (float16) log-probabilities: its perplexity, and KL ~0.
        self.tally = Tally()
        for i, row in enumerate(win.tokens):
            logits = window_logits(llm, row, win.first)
            logprobs = log_softmax(logits)
            store[i * win.scored : (i + 1) * win.scored] = logprobs
            self.tally.add(logprobs, logits, row[win.first + 1 :])
        store.flush()
        del store, llm
        self.logprobs = np.load(path, mmap_mode="r")

    def compare(self, model: Path, threads: int) -> Tally:
        """KL, agreement and perplexity of `model` against the source, window by window."""
        win = self.windows
        llm = load(model, context=win.tokens.shape[1], threads=threads, logits_all=True)
        tally = Tally()
        for i, row in enumerate(win.tokens):
            ref = np.asarray(self.logprobs[i * win.scored : (i + 1) * win.scored], dtype=np.float64)
            tally.add(ref, window_logits(llm, row, win.first), row[win.first + 1 :])
        del llm
        return tally

"""A tiny random Llama-architecture GGUF for fast tests, written here with the `gguf` package.

It is what a converted chat model looks like to llama.cpp, only small: a SentencePiece-style
vocabulary (byte fallback, so any text tokenizes), ChatML control tokens and chat template, a
context length, and two transformer blocks. The width is 256 so that llama.cpp's K-quants
(256-value super-blocks) apply for real instead of falling back, as they would on a narrower model.
Nothing is downloaded; the same seed writes the same bytes.

    python -m modelprep.families.llm.tiny OUT.gguf
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

# As converted chat models carry it: the newlines are Jinja escapes inside the template's text.
CHAT_TEMPLATE = (
    r"{% for message in messages %}"
    r"{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    r"{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# <unk>, <s> and the ChatML markers come first, as a converted tokenizer has them.
SPECIAL = ("<unk>", "<s>", "<|im_start|>", "<|im_end|>")
BOS, EOS = 1, 3  # a chat model stops at <|im_end|>
WORDS = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "is",
    "was",
    "that",
    "it",
    "for",
    "on",
    "with",
    "as",
    "by",
    "at",
    "from",
    "this",
    "be",
    "are",
    "or",
    "an",
    "not",
    "but",
    "have",
    "had",
    "has",
    "which",
    "one",
    "all",
    "were",
    "when",
    "there",
    "can",
    "their",
    "more",
    "will",
    "would",
    "about",
    "if",
    "been",
    "so",
    "what",
    "out",
    "up",
    "into",
    "hacker",
    "hackers",
    "program",
    "computer",
    "system",
    "time",
    "people",
    "word",
    "new",
    "very",
    "used",
    "some",
    "other",
    "who",
    "than",
    "only",
    "also",
    "like",
    "its",
    "many",
    "most",
    "first",
    "then",
    "way",
    "such",
    "these",
    "two",
    "them",
    "any",
    "could",
    "do",
    "just",
    "over",
    "because",
    "good",
    "model",
    "serve",
    "fast",
    "small",
    "large",
    "text",
    "answer",
    "question",
    "hello",
    "world",
    "you",
    "we",
    "they",
    "he",
    "she",
]
SPACE = "\u2581"  # SentencePiece's word-start marker


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """Tokens, scores and token types. Every prefix of a word is a token too, because llama.cpp's
    SentencePiece tokenizer builds words by merging adjacent pieces that are themselves tokens."""
    from gguf import TokenType

    tokens = list(SPECIAL)
    types = [TokenType.UNKNOWN, TokenType.CONTROL, TokenType.CONTROL, TokenType.CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [TokenType.BYTE] * 256
    pieces: dict[str, None] = {}
    for ch in (SPACE, *"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,;:!?'\"()-"):
        pieces.setdefault(ch, None)
    for word in WORDS:
        marked = SPACE + word
        for end in range(2, len(marked) + 1):
            pieces.setdefault(marked[:end], None)
    tokens += list(pieces)
    types += [TokenType.NORMAL] * len(pieces)
    # Longer pieces score higher, so merges prefer whole words.
    scores = [0.0] * (len(SPECIAL) + 256) + [float(len(p)) - i * 1e-4 for i, p in enumerate(pieces)]
    return tokens, scores, [int(t) for t in types]


def build(
    out: Path,
    *,
    embedding: int = 256,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    feed_forward: int = 512,
    context: int = 512,
    seed: int = 0,
    open_ended: bool = False,
) -> Path:
    """Write a random Llama GGUF to `out` (its folder created): float16 matrices, float32 norms.

    `open_ended` zeroes the special tokens' output rows: their logit is 0 among logits a few units
    either side, so greedy decoding never chooses end-of-generation and a generation lasts max_tokens,
    as serving tests that count tokens need. Sampled (temperature 1) it still does now and then: 10 of
    1,712 answers of 128 tokens on 2026-12-07, about 5 in 100,000 tokens; tests that count on
    max_tokens decode greedily."""
    from gguf import GGUFWriter, LlamaFileType

    out.parent.mkdir(parents=True, exist_ok=True)
    tokens, scores, types = vocabulary()
    rng = np.random.default_rng(seed)
    head_dim = embedding // heads

    def w(rows: int, cols: int, scale: float) -> np.ndarray:
        # numpy order (rows, cols) is ggml's (cols, rows): each output row is one ggml row of `cols` values.
        return (rng.standard_normal((rows, cols)) * scale).astype(np.float16)

    def norm(n: int) -> np.ndarray:
        return (1.0 + rng.standard_normal(n) * 0.05).astype(np.float32)

    writer = GGUFWriter(str(out), "llama")
    writer.add_name("modelstack tiny llama (random weights)")
    writer.add_context_length(context)
    writer.add_embedding_length(embedding)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(feed_forward)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(LlamaFileType.MOSTLY_F16)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(BOS)
    writer.add_eos_token_id(EOS)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)

    in_scale = 1.0 / np.sqrt(embedding)
    writer.add_tensor("token_embd.weight", w(len(tokens), embedding, 1.0))
    for i in range(layers):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", norm(embedding))
        writer.add_tensor(p + "attn_q.weight", w(heads * head_dim, embedding, in_scale))
        writer.add_tensor(p + "attn_k.weight", w(kv_heads * head_dim, embedding, in_scale))
        writer.add_tensor(p + "attn_v.weight", w(kv_heads * head_dim, embedding, in_scale))
        writer.add_tensor(p + "attn_output.weight", w(embedding, heads * head_dim, in_scale))
        writer.add_tensor(p + "ffn_norm.weight", norm(embedding))
        writer.add_tensor(p + "ffn_gate.weight", w(feed_forward, embedding, in_scale))
        writer.add_tensor(p + "ffn_up.weight", w(feed_forward, embedding, in_scale))
        writer.add_tensor(p + "ffn_down.weight", w(embedding, feed_forward, 1.0 / np.sqrt(feed_forward)))
    writer.add_tensor("output_norm.weight", norm(embedding))
    # Logits with a spread of a few units: next-token distributions peaked enough that
    # quantization moves them measurably, as it does a trained model's.
    output = w(len(tokens), embedding, 3.0 * in_scale)
    if open_ended:
        output[: len(SPECIAL)] = 0.0
    writer.add_tensor("output.weight", output)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


if __name__ == "__main__":
    path = build(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny.gguf"))
    print(f"{path}: {path.stat().st_size:,} bytes")

"""A tiny random Llama-architecture GGUF for the text-generation tests (written with ``gguf``).

Two blocks, 64 wide, a 400-token SentencePiece-style vocabulary (byte fallback, so any text
tokenizes) with ChatML's special tokens and template: llama.cpp loads and runs it like any Llama
model, in milliseconds. The weights are random, so the text is gibberish; the tests check the
protocol, the batching and the limits, not the words. The output row of every special token is
zero, so end-of-generation is (practically) never sampled and a generation lasts max_tokens.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
    "'<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CONTEXT = 4096
EOS = 4  # <|im_end|>


def write_tiny_llama(
    path: Path, seed: int = 0, n_embd: int = 64, n_layer: int = 2, n_head: int = 4, n_head_kv: int = 2, n_ff: int = 128
) -> Path:
    import gguf

    rng = np.random.default_rng(seed)
    specials = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    chars = list(string.ascii_letters + string.digits + ".,!?'-")
    words = ["the", "and", "you", "hello", "world", "model", "token", "answer", "is", "of", "to", "in"]
    pieces = chars + ["\u2581" + c for c in chars] + ["\u2581" + w for w in words] + ["\u2581"]
    tokens = specials + bytes_ + pieces
    T = gguf.TokenType
    types = [T.UNKNOWN, T.CONTROL, T.CONTROL, T.CONTROL, T.CONTROL] + [T.BYTE] * 256 + [T.NORMAL] * len(pieces)
    scores = [0.0] * (len(specials) + 256) + [-float(i % 50) for i in range(len(pieces))]
    n_vocab = len(tokens)

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-random-llama")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(EOS)
    writer.add_unk_token_id(0)
    writer.add_add_bos_token(True)
    writer.add_chat_template(CHATML)

    def weight(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    n_kv = n_embd // n_head * n_head_kv
    writer.add_tensor("token_embd.weight", weight(n_vocab, n_embd, scale=1.0))
    for i in range(n_layer):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.attn_q.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.attn_k.weight", weight(n_kv, n_embd))
        writer.add_tensor(f"blk.{i}.attn_v.weight", weight(n_kv, n_embd))
        writer.add_tensor(f"blk.{i}.attn_output.weight", weight(n_embd, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(n_embd, np.float32))
        writer.add_tensor(f"blk.{i}.ffn_gate.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_up.weight", weight(n_ff, n_embd))
        writer.add_tensor(f"blk.{i}.ffn_down.weight", weight(n_embd, n_ff))
    writer.add_tensor("output_norm.weight", np.ones(n_embd, np.float32))
    output = weight(n_vocab, n_embd, scale=1.0)
    output[: len(specials)] = 0.0  # special tokens never win: generations run to max_tokens, as tests need
    writer.add_tensor("output.weight", output)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path

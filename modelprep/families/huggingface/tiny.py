"""A tiny BERT in Hugging Face format (random weights, small vocabulary, a real tokenizer.json) for fast tests.

The folder looks like what `save_pretrained` writes: config.json, model.safetensors (PyTorch
state-dict names), tokenizer.json, vocab.txt and tokenizer_config.json. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an and or but not no yes is are was were be been good bad great terrible happy sad love hate "
    "movie film book day night food service place time people thing way work home city car dog cat "
    "very really so too quite just only also still even more most less least best worst fine ok okay "
    "i you he she it we they me my your our their this that these those what which who when where why how "
    "to of in on at by for with from about into over after before under between through during without "
    "is was has had do does did can could will would should may might must shall "
    "one two three four five first last new old big small long short high low right left "
    "hello world test text sentence word model serve fast slow small large"
).split()
PIECES = ["##s", "##ed", "##ing", "##ly", "##er", "##est", "##y", "##e", "##a", "##o", "##i", "##n", "##t", "##r"]
PUNCT = list(".,!?;:'\"()-")


def vocabulary() -> list[str]:
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789")
    seen: dict[str, None] = {}
    for token in [*SPECIAL, *PUNCT, *letters, *(f"##{c}" for c in letters), *PIECES, *WORDS]:
        seen.setdefault(token, None)
    return list(seen)


def build_tokenizer(vocab: list[str], max_length: int):  # -> tokenizers.Tokenizer
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    ids = {t: i for i, t in enumerate(vocab)}
    tok = Tokenizer(models.WordPiece(ids, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True
    )
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ids["[CLS]"]), ("[SEP]", ids["[SEP]"])],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.enable_truncation(max_length)
    return tok


def build(
    out: Path,
    *,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate: int = 64,
    max_positions: int = 128,
    seed: int = 0,
    labels: list[str] | None = None,
) -> Path:
    """Write a random BERT to `out` (created); with `labels`, a sequence classifier with that many classes."""
    from safetensors.numpy import save_file

    out.mkdir(parents=True, exist_ok=True)
    vocab = vocabulary()
    rng = np.random.default_rng(seed)

    def w(*shape: int, scale: float = 0.2) -> np.ndarray:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    state: dict[str, np.ndarray] = {
        "embeddings.word_embeddings.weight": w(len(vocab), hidden, scale=1.0),
        "embeddings.position_embeddings.weight": w(max_positions, hidden),
        "embeddings.token_type_embeddings.weight": w(2, hidden),
        "embeddings.LayerNorm.weight": 1 + w(hidden, scale=0.05),
        "embeddings.LayerNorm.bias": w(hidden, scale=0.05),
        "pooler.dense.weight": w(hidden, hidden),
        "pooler.dense.bias": w(hidden, scale=0.05),
    }
    for i in range(layers):
        p = f"encoder.layer.{i}."
        for name in ("query", "key", "value"):
            state[f"{p}attention.self.{name}.weight"] = w(hidden, hidden)
            state[f"{p}attention.self.{name}.bias"] = w(hidden, scale=0.05)
        state[f"{p}attention.output.dense.weight"] = w(hidden, hidden)
        state[f"{p}attention.output.dense.bias"] = w(hidden, scale=0.05)
        state[f"{p}intermediate.dense.weight"] = w(intermediate, hidden)
        state[f"{p}intermediate.dense.bias"] = w(intermediate, scale=0.05)
        state[f"{p}output.dense.weight"] = w(hidden, intermediate)
        state[f"{p}output.dense.bias"] = w(hidden, scale=0.05)
        for ln in ("attention.output.LayerNorm", "output.LayerNorm"):
            state[f"{p}{ln}.weight"] = 1 + w(hidden, scale=0.05)
            state[f"{p}{ln}.bias"] = w(hidden, scale=0.05)
    config = {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": len(vocab),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": intermediate,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": max_positions,
        "type_vocab_size": 2,
        "initializer_range": 0.02,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }
    if labels:
        state = {f"bert.{k}": v for k, v in state.items()}
        state["classifier.weight"] = w(len(labels), hidden, scale=1.0)
        state["classifier.bias"] = w(len(labels), scale=0.1)
        config["architectures"] = ["BertForSequenceClassification"]
        config["id2label"] = {str(i): name for i, name in enumerate(labels)}
        config["label2id"] = {name: i for i, name in enumerate(labels)}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    build_tokenizer(vocab, max_positions).save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "BertTokenizerFast",
                "do_lower_case": True,
                "model_max_length": max_positions,
                "cls_token": "[CLS]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "unk_token": "[UNK]",
                "mask_token": "[MASK]",
            },
            indent=2,
        )
        + "\n"
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps(
            {
                "cls_token": "[CLS]",
                "sep_token": "[SEP]",
                "pad_token": "[PAD]",
                "unk_token": "[UNK]",
                "mask_token": "[MASK]",
            },
            indent=2,
        )
        + "\n"
    )
    return out

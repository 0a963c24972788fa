"""Helpers for the text-model tests: random sentences over a small vocabulary (words the tiny BERT knows and some it does not)."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = (
    "the a good bad movie film day night food service very really happy sad love hate i you we they is was not "
    "so fine ok hello world test unseen zebra quokka 42 café naïve"
).split()


def sentences(n: int, seed: int = 1, longest: int = 30) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, longest))) for _ in range(n)]


def tiny_text_onnx(
    path: Path, labels: tuple[str, ...] = (), max_length: int = 32, truncation: str = "truncate"
) -> Path:
    """A text artifact without TensorFlow: mean of token embeddings over the mask, L2-normalised (or a softmax head),
    with the tiny BERT's tokenizer in its metadata — the same contract as prep's artifacts."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from modelprep.families.huggingface import tiny
    from serving.text import TextSettings

    vocab = tiny.vocabulary()
    rng = np.random.default_rng(11)
    dim = 8
    inits = [
        numpy_helper.from_array(rng.standard_normal((len(vocab), dim)).astype(np.float32), "E"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one_axis"),
        numpy_helper.from_array(np.array([1e-9], dtype=np.float32), "eps"),
    ]
    nodes = [
        helper.make_node("Gather", ["E", "input_ids"], ["emb"]),
        helper.make_node("Unsqueeze", ["attention_mask", "minus_one"], ["mask3"]),
        helper.make_node("Cast", ["mask3"], ["maskf"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["emb", "maskf"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "one_axis"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["maskf", "one_axis"], ["count"], keepdims=0),
        helper.make_node("Max", ["count", "eps"], ["safe"]),
        helper.make_node("Div", ["summed", "safe"], ["mean"]),
    ]
    inits.append(numpy_helper.from_array(np.array([-1], dtype=np.int64), "minus_one"))
    if labels:
        inits += [
            numpy_helper.from_array(rng.standard_normal((dim, len(labels))).astype(np.float32), "W"),
            numpy_helper.from_array(np.zeros(len(labels), dtype=np.float32), "b"),
        ]
        nodes += [
            helper.make_node("MatMul", ["mean", "W"], ["logits0"]),
            helper.make_node("Add", ["logits0", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=-1),
        ]
        output, width = "probabilities", len(labels)
    else:
        nodes.append(helper.make_node("LpNormalization", ["mean"], ["sentence_embedding"], axis=-1, p=2))
        output, width = "sentence_embedding", dim
    graph = helper.make_graph(
        nodes,
        "tiny-text",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["batch", width])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    settings = TextSettings(
        task="text-classification" if labels else "sentence-embedding",
        max_length=max_length,
        truncation=truncation,
        labels=labels,
        output=output,
    )
    for k, v in settings.metadata(tiny.build_tokenizer(vocab, 512).to_str()).items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(path))
    return path

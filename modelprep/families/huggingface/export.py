"""Hugging Face BERT folder → TensorFlow (transformers' TF classes, no PyTorch) → ONNX with pooling inside → ORT-fused graph.

The weights load into `TFBertModel` through transformers' PyTorch→TF state-dict helper on the
safetensors arrays (`from_pretrained` cannot read safetensors without PyTorch). The exported
function then runs the encoder from those layers' variables, written in the forms tf2onnx turns
into what ONNX Runtime's BERT fuser recognises: an erf GELU (Keras' becomes Erfc, which ONNX
lacks), plain matmuls instead of Dense's tensordot, LayerNorm as mean/variance arithmetic
(with tf2onnx's global_pool_optimizer off, which would hide it), and the attention mask as
(1 - mask) · -10000 over two unsqueezes. Batch and sequence length stay dynamic.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelprep.families.huggingface.folder import Folder

OPSET = 17
INPUTS = ("input_ids", "attention_mask")
EMBEDDING_OUTPUT = "sentence_embedding"
PROBABILITIES_OUTPUT = "probabilities"


@dataclass(frozen=True)
class Exported:
    onnx: bytes  # float32, fused by ONNX Runtime's BERT optimizer
    output: str
    fused: dict[str, int]  # fused operator counts (Attention, SkipLayerNormalization, ...)


def load_tf_bert(folder: Folder) -> tuple[Any, dict[str, np.ndarray]]:
    """TFBertModel with every weight of the folder, and the classifier head's arrays (if any)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from modelprep.tf_env import tensorflow

    tensorflow()
    from transformers import BertConfig, TFBertModel
    from transformers.modeling_tf_pytorch_utils import load_pytorch_state_dict_in_tf2_model
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    state = folder.weights()
    head = {k.removeprefix("classifier."): v for k, v in state.items() if k.startswith("classifier.")}
    base = {k.removeprefix("bert."): v for k, v in state.items() if not k.startswith(("classifier.", "cls."))}
    base.pop("embeddings.position_ids", None)  # a buffer, not a weight
    config = BertConfig.from_dict(folder.config)
    model = TFBertModel(config)
    ids = np.ones((1, 4), dtype=np.int32)
    model({"input_ids": ids, "attention_mask": ids}, training=False)  # build the variables
    load_pytorch_state_dict_in_tf2_model(model, base, allow_missing_keys=False, skip_logger_warnings=True)
    return model, head


def text_function(model: Any, head: dict[str, np.ndarray], pooling: str, normalize: bool, classify: bool) -> Any:
    """A tf.function (input_ids, attention_mask: int64 [batch, seq]) → embeddings or class probabilities."""
    import tensorflow as tf

    bert = model.bert
    cfg = model.config
    heads, hidden = cfg.num_attention_heads, cfg.hidden_size
    size = hidden // heads
    eps = float(cfg.layer_norm_eps)
    emb = bert.embeddings

    def dense(layer: Any, x: Any) -> Any:
        return tf.matmul(x, layer.kernel) + layer.bias

    def layer_norm(layer: Any, x: Any) -> Any:
        mean = tf.reduce_mean(x, axis=-1, keepdims=True)
        centred = x - mean
        var = tf.reduce_mean(tf.pow(centred, 2.0), axis=-1, keepdims=True)
        return centred / tf.sqrt(var + eps) * layer.gamma + layer.beta

    def gelu(x: Any) -> Any:
        return x * (1.0 + tf.math.erf(x / 1.4142135623730951)) * 0.5

    def split(x: Any, batch: Any, seq: Any, perm: list[int]) -> Any:
        return tf.transpose(tf.reshape(x, tf.stack([batch, seq, heads, size])), perm)

    def encoder_layer(layer: Any, h: Any, mask: Any, batch: Any, seq: Any) -> Any:
        sa = layer.attention.self_attention
        q = split(dense(sa.query, h), batch, seq, [0, 2, 1, 3])
        k = split(dense(sa.key, h), batch, seq, [0, 2, 3, 1])
        v = split(dense(sa.value, h), batch, seq, [0, 2, 1, 3])
        scores = tf.matmul(q, k) / float(np.sqrt(size)) + mask
        context = tf.matmul(tf.nn.softmax(scores, axis=-1), v)
        context = tf.reshape(tf.transpose(context, [0, 2, 1, 3]), tf.stack([batch, seq, hidden]))
        out = layer.attention.dense_output
        h = layer_norm(out.LayerNorm, dense(out.dense, context) + h)
        inner = gelu(dense(layer.intermediate.dense, h))
        return layer_norm(layer.bert_output.LayerNorm, dense(layer.bert_output.dense, inner) + h)

    word = emb.weight
    positions = emb.position_embeddings
    token_type = emb.token_type_embeddings
    # numpy, not tf.constant: a captured eager tensor would become a graph input in tf2onnx
    head_w = None if not classify else np.ascontiguousarray(head["weight"].T, dtype=np.float32)
    head_b = None if not classify else head["bias"].astype(np.float32)
    pool_w = bert.pooler.dense if pooling == "pooler" else None

    @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int64, name=n) for n in INPUTS])
    def forward(input_ids: Any, attention_mask: Any) -> Any:
        batch, seq = tf.shape(input_ids)[0], tf.shape(input_ids)[1]
        h = tf.gather(word, input_ids) + tf.gather(positions, tf.range(seq)) + token_type[0]
        h = layer_norm(emb.LayerNorm, h)
        ext = (1.0 - tf.cast(tf.expand_dims(tf.expand_dims(attention_mask, 1), 1), tf.float32)) * -10000.0
        for layer in bert.encoder.layer:
            h = encoder_layer(layer, h, ext, batch, seq)
        if pooling == "mean":
            m = tf.expand_dims(tf.cast(attention_mask, tf.float32), -1)
            pooled = tf.reduce_sum(h * m, axis=1) / tf.maximum(tf.reduce_sum(m, axis=1), 1e-9)
        elif pooling == "pooler":
            pooled = tf.tanh(dense(pool_w, h[:, 0]))
        else:
            pooled = h[:, 0]
        if normalize:
            pooled = pooled / tf.maximum(tf.norm(pooled, axis=-1, keepdims=True), 1e-12)
        if classify:
            return tf.nn.softmax(tf.matmul(pooled, head_w) + head_b, axis=-1)
        return pooled

    return forward


@contextlib.contextmanager
def _without_global_pool_optimizer() -> Iterator[None]:
    """tf2onnx turns LayerNorm's ReduceMean into GlobalAveragePool, which ORT's LayerNorm fuser does not see."""
    from tf2onnx import optimizer

    table = optimizer._optimizers
    saved = table.pop("global_pool_optimizer", None)
    try:
        yield
    finally:
        if saved is not None:
            table["global_pool_optimizer"] = saved


def to_onnx(function: Any, output: str) -> Any:
    """tf2onnx with dynamic batch and sequence length; the one output renamed to `output`."""
    import tf2onnx

    with _without_global_pool_optimizer():
        proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature, opset=OPSET)
    old = proto.graph.output[0].name
    for node in proto.graph.node:
        node.output[:] = [output if o == old else o for o in node.output]
        node.input[:] = [output if i == old else i for i in node.input]
    proto.graph.output[0].name = output
    return proto


def scale_as_div(proto: Any) -> int:
    """TensorFlow folds the score scaling `/ sqrt(d)` into `* (1/sqrt(d))`; ORT's attention fuser matches the
    mask's Mul by type, so with a second Mul beside it, it takes the wrong one. Turn the scaling back into a Div."""
    from onnx import numpy_helper

    inits = {t.name: t for t in proto.graph.initializer}
    producers = {o: n for n in proto.graph.node for o in n.output}
    changed = 0
    for softmax in [n for n in proto.graph.node if n.op_type == "Softmax"]:
        add = producers.get(softmax.input[0])
        if add is None or add.op_type != "Add":
            continue
        for name in add.input:
            mul = producers.get(name)
            if mul is None or mul.op_type != "Mul":
                continue
            scale = inits.get(mul.input[1])
            source = producers.get(mul.input[0])
            if scale is None or source is None or source.op_type != "MatMul":
                continue
            value = numpy_helper.to_array(scale)
            if value.size != 1 or float(value.reshape(-1)[0]) == 0.0:
                continue
            divisor = numpy_helper.from_array((1.0 / value).astype(value.dtype), f"{mul.name}/sqrt_head_size")
            proto.graph.initializer.append(divisor)
            mul.input[1] = divisor.name
            mul.op_type = "Div"
            changed += 1
    return changed


def fuse(proto: Any, num_heads: int, hidden_size: int) -> tuple[bytes, dict[str, int]]:
    """ORT's basic graph optimisation (run by hand: the optimizer's default level imports torch), then its BERT fusions."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.transformers.optimizer import optimize_model

    scale_as_div(proto)
    with tempfile.TemporaryDirectory(prefix="modelprep-onnx-") as tmp:
        raw, basic = Path(tmp) / "raw.onnx", Path(tmp) / "basic.onnx"
        onnx.save(proto, str(raw))
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(basic)
        options.log_severity_level = 3
        ort.InferenceSession(str(raw), options, providers=["CPUExecutionProvider"])
        fused = optimize_model(str(basic), model_type="bert", num_heads=num_heads, hidden_size=hidden_size, opt_level=0)
        stats = {k: int(v) for k, v in fused.get_fused_operator_statistics().items() if v}
        return fused.model.SerializeToString(), stats


def export(folder: Folder, classify: bool) -> Exported:
    model, head = load_tf_bert(folder)
    pooling, normalize = folder.pooling()
    if classify and not head:
        raise ValueError(f"{folder.path} has no classifier weights (classifier.weight / classifier.bias)")
    if classify and not (folder.path / "1_Pooling").is_dir():
        pooling, normalize = "pooler", False  # BertForSequenceClassification: the pooler's [CLS] output
    output = PROBABILITIES_OUTPUT if classify else EMBEDDING_OUTPUT
    function = text_function(model, head, pooling, normalize, classify)
    proto = to_onnx(function, output)
    data, stats = fuse(proto, folder.num_heads, folder.hidden_size)
    return Exported(data, output, stats)

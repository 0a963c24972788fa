"""The bridge from a user's Keras 3 model to Keras 2 (`tf_keras`), which
tensorflow-model-optimization (pruning, clustering, quantization-aware training) needs.

The bridge rebuilds the model layer by layer from each layer's config and copies the weights.
That works for Sequential and functional models made of built-in Keras layers. It cannot work
for a subclassed model (its graph lives in Python code, `call()`, not in a config) nor for a
custom layer or a raw `keras.ops` call inside a functional graph (tf_keras has no class to
rebuild it with); `check_convertible` names each such part.

Importing tfmot sets TF_USE_LEGACY_KERAS=1 in the process, which changes what `tf.keras`
means; so this module never imports tfmot, and the tfmot work runs in a child process
(modelprep.families.keras.tfmot_worker).
"""

from __future__ import annotations

import inspect
from typing import Any

from iac.spec.errors import Problem, UserError

FIELD = "optimize.variants"
FIX = (
    "keep this model to post-training variants (litert-*, onnx-*) in optimize.variants, or rebuild it "
    "as a Sequential or functional model of built-in Keras layers"
)
# Keys of a Keras 3 layer config that every Keras 2 layer accepts through **kwargs.
_BASE_KEYS = {"name", "trainable", "dtype"}


def check_convertible(model: Any, where: str = "model.path") -> None:
    """Raise a UserError naming every part of `model` that tf_keras cannot rebuild."""
    import tf_keras

    problems: list[Problem] = []
    kind = type(model).__name__
    if kind == "TFSMLayer":
        raise UserError.single(
            where,
            FIELD,
            "the model is a SavedModel: its graph has no Keras layers that pruning, clustering and quantization-aware "
            "training (Keras 2, tf_keras) could rebuild",
            "point model.path at the .keras file the SavedModel was exported from, or " + FIX.split(", or ")[0],
        )
    if kind not in ("Sequential", "Functional"):
        problems.append(
            Problem(
                where,
                FIELD,
                f"the model is a subclassed model ({kind}): pruning, clustering and quantization-aware training run on "
                "Keras 2 (tf_keras), which can only rebuild Sequential and functional models from their config, not a "
                "call() written in Python",
                FIX,
            )
        )
        raise UserError(problems)
    for layer in _layers(model):
        name = type(layer).__name__
        if name == "InputLayer":
            continue
        module = type(layer).__module__
        if not module.startswith("keras.src.layers") or not hasattr(tf_keras.layers, name):
            what = "custom layer" if not module.startswith("keras") else "operation"
            problems.append(
                Problem(
                    where,
                    FIELD,
                    f"{what} {layer.name!r} ({module}.{name}) has no tf_keras equivalent, so pruning, clustering and "
                    "quantization-aware training (which need Keras 2) cannot rebuild it",
                    FIX,
                )
            )
    if problems:
        raise UserError(problems)


def to_tf_keras(model: Any) -> Any:
    """A tf_keras copy of a Keras 3 Sequential/functional model, weights included (a copy:
    training the result never changes `model`)."""
    import tf_keras

    check_convertible(model)
    made: dict[int, Any] = {}  # id(keras 3 layer) -> tf_keras layer (shared layers stay shared)

    def rebuild(layer: Any) -> Any:
        if id(layer) not in made:
            cls = getattr(tf_keras.layers, type(layer).__name__)
            made[id(layer)] = cls.from_config(_legacy_config(cls, layer.get_config()))
        return made[id(layer)]

    if type(model).__name__ == "Sequential":
        shape = tuple(model.inputs[0].shape[1:])
        inputs = tf_keras.Input(shape=shape, name=_input_name(model))
        x = inputs
        for layer in model.layers:
            x = rebuild(layer)(x)
        clone = tf_keras.Model(inputs, x, name=model.name)
    else:
        tensors: dict[int, Any] = {}
        for depth in sorted(model._nodes_by_depth, reverse=True):  # inputs first
            for node in model._nodes_by_depth[depth]:
                op = node.operation
                if type(op).__name__ == "InputLayer":
                    for kt in node.outputs:
                        tensors[id(kt)] = tf_keras.Input(shape=tuple(kt.shape[1:]), name=op.name)
                    continue
                args = [tensors[id(kt)] for kt in node.arguments.keras_tensors]
                out = rebuild(op)(args[0] if len(args) == 1 else args)
                outs = out if isinstance(out, (list, tuple)) else [out]
                for kt, tensor in zip(node.outputs, outs):
                    tensors[id(kt)] = tensor
        clone = tf_keras.Model(
            [tensors[id(t)] for t in model.inputs],
            [tensors[id(t)] for t in model.outputs],
            name=model.name,
        )
    for layer in _layers(model):
        if id(layer) in made:
            made[id(layer)].set_weights([w.copy() for w in layer.get_weights()])
    return clone


def _layers(model: Any) -> list[Any]:
    if type(model).__name__ == "Sequential":
        return list(model.layers)
    return list(getattr(model, "_operations", None) or model.layers)


def _input_name(model: Any) -> str:
    for layer in _layers(model):
        if type(layer).__name__ == "InputLayer":
            return layer.name
    return "input"


def _legacy_config(cls: type, config: dict[str, Any]) -> dict[str, Any]:
    """A Keras 3 layer config in the form the Keras 2 class takes: dtype policies as names,
    initializers/regularizers/constraints as Keras 2 objects, keys the class does not know dropped."""
    accepted = set(inspect.signature(cls.__init__).parameters) | _BASE_KEYS
    return {key: _legacy_value(key, value) for key, value in config.items() if key in accepted}


def _legacy_value(key: str, value: Any) -> Any:
    import tf_keras

    if not isinstance(value, dict) or "class_name" not in value:
        return value
    if value["class_name"] in ("DTypePolicy", "FloatDTypePolicy"):
        return value.get("config", {}).get("name", "float32")
    for suffix, module in (
        ("initializer", tf_keras.initializers),
        ("regularizer", tf_keras.regularizers),
        ("constraint", tf_keras.constraints),
    ):
        if key.endswith(suffix):
            cls = getattr(module, value["class_name"], None)
            if cls is None:
                raise UserError.single(
                    "model.path",
                    FIELD,
                    f"{key} {value['class_name']!r} has no tf_keras equivalent",
                    FIX,
                )
            params = set(inspect.signature(cls.__init__).parameters)
            return cls(**{k: v for k, v in (value.get("config") or {}).items() if k in params})
    return value

"""Model loading: the runtime for the config's artifact (LiteRT, ONNX Runtime, a text model or a
several-input one), checked against the config and warmed up."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from serving import runtime
from serving.config import InputSpec, ServingConfig

if TYPE_CHECKING:
    from serving.runtime import Runtime


def load_runtime(config: ServingConfig) -> Runtime:
    """The runtime for the config's artifact, with the config's thread count."""
    max_bucket = max(runtime.DEFAULT_MAX_BUCKET, runtime.bucket_for(config.max_batch_size))
    if len(config.inputs) > 1:  # several named inputs (serving.multi_runtime)
        from serving.multi_runtime import load_multi_runtime

        return load_multi_runtime(config)  # type: ignore[no-any-return]
    if config.input.dtype == "string":  # a text model: tokenizer and ONNX graph in one artifact
        from serving.text import TextModel

        return TextModel(config.artifact, num_threads=config.threads)
    if config.resolved_runtime == "onnx":
        from serving.onnx_runtime import OnnxModel

        return OnnxModel(config.artifact, num_threads=config.threads)
    return runtime.LiteRTModel(config.artifact, num_threads=config.threads, max_bucket=max_bucket)


def check_model_matches_config(model: Runtime, spec: InputSpec) -> None:
    """Fail start-up when the config's input does not fit the artifact's input tensor."""
    if spec.dtype == "string":
        if model.input_dtype != np.dtype(object):
            raise ValueError(
                f"inputs[0].dtype string needs a text model, but the artifact takes {model.input_dtype.name}"
            )
        return
    model_shape = model.input_shape
    if len(model_shape) != len(spec.shape) or any(m not in (-1, c) for m, c in zip(model_shape, spec.shape)):
        raise ValueError(
            f"inputs[0].shape {list(spec.shape)} does not match the model's input shape "
            f"{list(model_shape)} (batch dimension excluded)"
        )
    tensor = model.input_dtype
    client = np.dtype(spec.dtype)
    fits = (
        tensor.kind == "f"
        or client == tensor
        or (model.input_quantized and client.kind == "f")
        or (tensor.kind in "iu" and client.kind in "iu")
    )
    if not fits:
        raise ValueError(f"inputs[0].dtype {spec.dtype} cannot feed the model's {tensor.name} input tensor")


def warm_up_sizes(config: ServingConfig) -> tuple[int, ...]:
    """Batch sizes to run once at start-up: 1, and every bucket a batch can land in."""
    sizes = [1]
    while config.batching_enabled and sizes[-1] < config.max_batch_size:
        sizes.append(min(sizes[-1] * 2, config.max_batch_size))
    return tuple(sizes)


def single_sample_cost(model: Runtime, runs: int = 15) -> float:
    """Median seconds of one single-sample inference: decides whether the batcher runs the model
    on the loop thread or on an inference thread."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        model.warm_up((1,))
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def load_model(config: ServingConfig) -> tuple[Runtime, float, float]:
    """Load, check and warm up the model: (runtime, warm-up ms, single-sample seconds)."""
    model = load_runtime(config)
    if len(config.inputs) > 1:  # several named inputs: each checked by name
        from serving.multi_runtime import check_feeds

        check_feeds(model.feeds, config.inputs, config.artifact)  # type: ignore[attr-defined]
    else:
        check_model_matches_config(model, config.input)
    started = time.perf_counter()
    model.warm_up(warm_up_sizes(config))
    warm_up_ms = (time.perf_counter() - started) * 1000
    return model, warm_up_ms, single_sample_cost(model)

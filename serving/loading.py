"""Model loading: the runtime for the config's artifact (LiteRT, ONNX Runtime or a text model),
checked against the config's inputs and warmed up. A model with one input is the case of a list
of one: every input is paired with the model's by name and checked alike."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from serving import runtime
from serving.config import InputSpec, ServingConfig
from serving.feeds import pair

if TYPE_CHECKING:
    from serving.runtime import Feed, Runtime


def load_runtime(config: ServingConfig) -> Runtime:
    """The runtime for the config's artifact, with the config's thread count."""
    if config.input.dtype == "string":  # a text model: tokenizer and ONNX graph in one artifact
        from serving.text import TextModel

        return TextModel(config.artifact, num_threads=config.threads)
    if config.resolved_runtime == "onnx":
        from serving.onnx_runtime import OnnxModel

        return OnnxModel(config.artifact, num_threads=config.threads, inputs=config.inputs)
    max_bucket = max(runtime.DEFAULT_MAX_BUCKET, runtime.bucket_for(config.max_batch_size))
    return runtime.LiteRTModel(config.artifact, num_threads=config.threads, max_bucket=max_bucket, inputs=config.inputs)


def check_model_matches_config(model: Runtime, inputs: Sequence[InputSpec], where: str = "model") -> None:
    """Fail start-up when an input of the config does not fit the model's input it feeds."""
    feeds = {feed.name: feed for feed in model.feeds}
    pairs = pair(list(feeds), [spec.name for spec in inputs], where)
    for i, spec in enumerate(inputs):
        check_input(i, spec, feeds[pairs[spec.name]])


def check_input(i: int, spec: InputSpec, feed: Feed) -> None:
    """One input of the config against the model's: a text for a text model, else a fitting shape
    and a dtype the runtime can cast (or quantize) to the tensor's."""
    if spec.dtype == "string":
        if feed.dtype != np.dtype(object):
            raise ValueError(f"inputs[{i}].dtype string needs a text model, but the artifact takes {feed.dtype.name}")
        return
    shape = feed.shape
    if len(shape) != len(spec.shape) or any(m not in (-1, c) for m, c in zip(shape, spec.shape)):
        raise ValueError(
            f"inputs[{i}].shape {list(spec.shape)} does not match the model's input {feed.name!r} of shape "
            f"{list(shape)} (batch dimension excluded)"
        )
    tensor = feed.dtype
    client = np.dtype(spec.dtype)
    fits = (
        tensor.kind == "f"
        or client == tensor
        or (feed.quantized and client.kind == "f")
        or (tensor.kind in "iu" and client.kind in "iu")
    )
    if not fits:
        raise ValueError(f"inputs[{i}].dtype {spec.dtype} cannot feed the model's {tensor.name} input {feed.name!r}")


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
    check_model_matches_config(model, config.inputs, f"model artifact {config.artifact}")
    started = time.perf_counter()
    model.warm_up(warm_up_sizes(config))
    warm_up_ms = (time.perf_counter() - started) * 1000
    return model, warm_up_ms, single_sample_cost(model)

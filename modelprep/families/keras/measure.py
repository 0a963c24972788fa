"""Measuring a Keras model's variants: each one's metric, evaluation outputs and latency, run exactly
as the server runs it.

Artifacts run through the server's own runtime classes (serving.runtime's LiteRT, serving.onnx_runtime's
ONNX Runtime); the Keras baselines run the original model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np

from modelprep import evaluate
from modelprep.family import Measured, Variant
from modelprep.measure import gzip_len, outputs_sha256, path_bytes, samples
from modelprep.report import Measure, Notes
from modelprep.request import PrepRequest


def runtime_for(
    runtime: str, artifact: bytes, threads: int, inputs: tuple[tuple[str, tuple[int, ...], str], ...] | None = None
) -> Any:
    """The server's runtime for an artifact's bytes, with the server's thread count, its inputs
    named as the spec's ``inputs`` (name, sample shape, dtype) when given (the server's config)."""
    from serving.config import InputSpec

    specs = None if inputs is None else [InputSpec(name, tuple(shape), dtype) for name, shape, dtype in inputs]
    if runtime == "onnx":
        from serving.onnx_runtime import OnnxModel

        return OnnxModel.from_bytes(artifact, num_threads=threads, inputs=specs)
    from serving.runtime import LiteRTModel

    return LiteRTModel.from_bytes(artifact, num_threads=threads, inputs=specs)


def measure_variant(
    req: PrepRequest, variant: Variant, artifact: bytes, notes: dict[str, Any], x: np.ndarray, y: np.ndarray
) -> Measured:
    """Score the variant on the evaluation data and time it, exactly as the server runs it:
    float32 inputs in, the runtime's own quantization and dequantization, its outputs out."""
    o = req.optimize
    model = runtime_for(variant.runtime, artifact, req.threads, req.inputs)
    outputs = model.predict(x)
    value = evaluate.score(o.metric.value, outputs, y, o.top_k)
    one, batch = samples(x, 1), samples(x, evaluate.THROUGHPUT_BATCH)
    latency = evaluate.measure(lambda: model.predict(one), lambda: model.predict(batch), budget_s=req.latency_budget_s)
    row = Measure(
        name=variant.name,
        runtime=variant.runtime,
        technique=variant.technique,
        quantization=variant.quantization,
        artifact_file=variant.artifact_file,
        sha256=hashlib.sha256(artifact).hexdigest(),
        size_bytes=len(artifact),
        gzip_bytes=gzip_len(artifact),
        metric=o.metric,
        accuracy=round(value, 6),
        outputs_sha256=outputs_sha256(outputs),
        latency_p50_us=latency.p50_us,
        latency_p99_us=latency.p99_us,
        throughput_per_s=latency.throughput_per_s,
        latency_calls=latency.calls,
        threads=req.threads,
        notes=Notes.model_validate(notes),
    )
    return Measured(row, outputs)


def keras_baselines(
    req: PrepRequest, model: Any, x: np.ndarray, y: np.ndarray, progress: Callable[[str], None]
) -> list[Measure]:
    """The float model as trained: its metric (the gate's reference) and what Keras costs a call."""
    o = req.optimize
    progress("evaluating the float baseline (Keras)")
    value = round(evaluate.score(o.metric.value, evaluate.keras_predict(model, x), y, o.top_k), 6)
    size, packed = path_bytes(req.model_path)
    one, batch = samples(x, 1), samples(x, evaluate.THROUGHPUT_BATCH)
    one, batch = evaluate.keras_input(one), evaluate.keras_input(batch)
    timings = []
    predict = getattr(model, "predict", None)
    if predict is not None:
        progress("timing Keras model.predict")
        timings.append(
            (
                "keras-predict",
                "Keras model.predict, one sample a call",
                evaluate.measure(
                    lambda: predict(one, verbose=0),
                    lambda: predict(batch, verbose=0),
                    budget_s=req.latency_budget_s * 2,
                    min_calls=5,
                    max_calls=400,
                ),
            )
        )
    progress("timing a direct Keras call")
    timings.append(
        (
            "keras-call",
            "Keras model(x), one sample a call",
            evaluate.measure(
                lambda: np.asarray(evaluate.first_output(model(one, training=False))),
                lambda: np.asarray(evaluate.first_output(model(batch, training=False))),
                budget_s=req.latency_budget_s,
                min_calls=10,
                max_calls=2000,
            ),
        )
    )
    return [
        Measure(
            name=name,
            runtime="keras",
            technique="baseline",
            quantization="none",
            description=description,
            size_bytes=size,
            gzip_bytes=packed,
            metric=o.metric,
            accuracy=value,
            latency_p50_us=latency.p50_us,
            latency_p99_us=latency.p99_us,
            throughput_per_s=latency.throughput_per_s,
            latency_calls=latency.calls,
            threads=req.threads,
            baseline=True,
        )
        for name, description, latency in timings
    ]

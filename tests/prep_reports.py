"""A passing prep's report for tests that need one without running prep (render, the providers, the graph)."""

from __future__ import annotations

from typing import Any

from modelprep.report import Measure, PrepReport, TensorSignature


def passing_report(**chosen: Any) -> PrepReport:
    """The report of a prep that chose litert-int8 (13 bytes, accuracy 0.99), or what `chosen` changes
    in the chosen variant's row (e.g. runtime="onnx", artifact_file="model.onnx", name="onnx-dynamic")."""
    variant = Measure(
        name="litert-int8",
        runtime="litert",
        technique="ptq",
        quantization="int8",
        artifact_file="model.tflite",
        sha256="a" * 64,
        size_bytes=13,
        gzip_bytes=12,
        metric="accuracy",
        accuracy=0.99,
        latency_p50_us=8.0,
        latency_p99_us=9.0,
        throughput_per_s=1000.0,
        latency_calls=100,
        threads=1,
        accuracy_drop=0.0,
        passed_gate=True,
        chosen=True,
    ).model_copy(update=chosen)
    return PrepReport.of(
        key="k" * 64,
        metric="accuracy",
        top_k=5,
        objective="smallest",
        max_accuracy_drop=0.01,
        baseline_accuracy=0.99,
        model_sha256="b" * 64,
        threads=1,
        inputs=[TensorSignature(name="pixels", shape=[64])],
        outputs=[TensorSignature(name="output_0", shape=[10])],
        evaluation_samples=360,
        baselines=[],
        variants=[variant],
        choice="smallest artifact",
    )

"""The prep chart: a number per point, no number over another number or over a marker, and the names in a table."""

from __future__ import annotations

import io
import itertools

from modelprep.chart import entries_of, figure
from modelprep.report import Measure, PrepReport, TensorSignature

# The digits example's 13 variants and 2 Keras baselines as measured (sizes in bytes, p50 in µs): several
# within a few bytes or microseconds of each other, where names used to pile up.
DIGITS = [
    ("keras-predict", 1_045_685, 241_362.9, 0.9911),
    ("keras-call", 1_045_685, 7_499.9, 0.9911),
    ("litert-float32", 342_124, 11.1, 0.9911),
    ("litert-dynamic", 95_072, 5.9, 0.9911),
    ("litert-float16", 173_012, 10.9, 0.9911),
    ("litert-int8", 101_880, 6.0, 0.9911),
    ("litert-int8-io", 101_544, 15.1, 0.9911),
    ("pruned-float32", 342_052, 10.9, 0.9467),
    ("pruned-int8", 101_800, 6.0, 0.9444),
    ("clustered-float32", 342_052, 10.7, 0.9911),
    ("clustered-int8", 101_800, 6.1, 0.9911),
    ("qat-int8", 89_848, 6.0, 0.9644),
    ("onnx-float32", 341_558, 21.0, 0.9911),
    ("onnx-dynamic", 92_288, 18.7, 0.9911),
    ("onnx-static", 100_517, 21.5, 0.9867),
]


def _report() -> PrepReport:
    rows = []
    for name, size, p50, accuracy in DIGITS:
        baseline = name.startswith("keras")
        rows.append(
            Measure(
                name=name,
                runtime="keras" if baseline else name.split("-")[0],
                technique="ptq",
                quantization="none",
                artifact_file=None if baseline else "model.tflite",
                sha256=None if baseline else "a" * 64,
                size_bytes=size,
                gzip_bytes=size,
                metric="accuracy",
                accuracy=accuracy,
                latency_p50_us=p50,
                latency_p99_us=p50,
                throughput_per_s=1.0,
                latency_calls=1,
                threads=1,
                baseline=baseline,
                accuracy_drop=round(0.9911 - accuracy, 6),
                passed_gate=0.9911 - accuracy <= 0.01,
                chosen=name == "litert-int8",
            )
        )
    return PrepReport.of(
        key="k" * 64,
        metric="accuracy",
        top_k=5,
        objective="smallest",
        max_accuracy_drop=0.01,
        baseline_accuracy=0.9911,
        model_sha256="b" * 64,
        threads=1,
        inputs=[TensorSignature(name="pixels", shape=[64])],
        outputs=[TensorSignature(name="output_0", shape=[10])],
        evaluation_samples=360,
        baselines=rows[:2],
        variants=rows[2:],
        choice="smallest artifact",
    )


def test_no_number_overlaps_another_or_a_marker_on_the_13_variant_digits_prep() -> None:
    import matplotlib.pyplot as plt

    report = _report()
    fig, boxes = figure(report)
    try:
        assert len(boxes) == 2  # metric against size, and against latency
        for labels, markers in boxes:
            assert len(labels) == len(markers) == len(entries_of(report)) == 15
            for a, b in itertools.combinations(labels, 2):
                assert not a.overlaps(b), (a, b)
            for label, marker in itertools.product(labels, markers):
                assert not label.overlaps(marker), (label, marker)
        texts = {t.get_text() for t in fig.axes[2].tables[0].get_celld().values() for t in [t.get_text()]}
        assert {name for name, *_ in DIGITS} <= texts  # every name is in the table beside the plots
        png = io.BytesIO()
        fig.savefig(png, format="png")
        assert png.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        plt.close(fig)

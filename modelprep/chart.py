"""A PNG beside the report: size and latency of every variant and baseline against its metric."""

from __future__ import annotations

import io

from modelprep.report import PrepReport


def chart_png(report: PrepReport) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = report.metric.value
    names = {e.name for e in report.variants}
    entries = [*(b for b in report.baselines if b.name not in names), *report.variants]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), dpi=100)
    for axis, field, label in ((left, "size_bytes", "artifact size (bytes, log)"),
                               (right, "latency_p50_us", "single-sample latency p50 (µs, log)")):
        for e in entries:
            if e.baseline:
                style = {"marker": "s", "color": "grey"}
            elif e.chosen:
                style = {"marker": "*", "color": "tab:green", "s": 220}
            elif e.passed_gate:
                style = {"marker": "o", "color": "tab:blue"}
            else:
                style = {"marker": "x", "color": "tab:red"}
            x = getattr(e, field)
            axis.scatter(x, e.accuracy, **style)
            axis.annotate(e.name, (x, e.accuracy), fontsize=7, xytext=(4, 3), textcoords="offset points")
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel(metric)
        axis.grid(True, alpha=0.3)
    allowed = report.max_accuracy_drop
    limit = report.baseline_accuracy + (allowed if metric == "mae" else -allowed)
    for axis in (left, right):
        axis.axhline(limit, color="tab:red", linestyle="--", linewidth=0.8, label="accuracy gate")
        axis.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"modelprep {report.key[:12]}: chosen {report.variant} "
                 f"(objective {report.objective.value}; grey = baselines, red x = failed the gate)", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    plt.close(fig)
    return buffer.getvalue()

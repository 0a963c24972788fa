"""A PNG beside the report: every variant and baseline's metric against its size and its latency.

Each point carries a number, not a name; the names, sizes, latencies and gate results are in a
table beside the plots, so a cluster of variants (13 on the digits example, several of them within
a few bytes or microseconds of each other) stays readable. The numbers are placed by hand
(`_place`): each goes to the first spot around its point, ring by ring, whose box overlaps no other
number, no marker and leaves the axes, with a leader line when it had to move away. adjustText, the
usual library for this, repels labels iteratively and does not promise a layout without overlaps,
which is what the chart is for.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

from modelprep.report import Measure, PrepReport

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.transforms import Bbox

RINGS_PX = (9.0, 15.0, 22.0, 30.0, 40.0, 52.0, 66.0, 82.0, 100.0, 125.0, 150.0, 180.0)
ANGLES = (45, 135, 315, 225, 90, 270, 0, 180, 20, 160, 340, 200, 65, 115, 295, 245)


def entries_of(report: PrepReport) -> list[Measure]:
    """What the chart shows, in the order it numbers them: baselines not also candidates, then candidates."""
    names = {e.name for e in report.variants}
    return [*(b for b in report.baselines if b.name not in names), *report.variants]


def status(e: Measure) -> str:
    if e.chosen:
        return "chosen"
    if e.baseline:
        return "baseline"
    if not e.passed_gate:
        return "failed gate"
    return "passed" if e.eligible else "listed only"


STYLES: dict[str, dict[str, Any]] = {
    "chosen": {"marker": "*", "color": "tab:green", "s": 200},
    "baseline": {"marker": "s", "color": "grey", "s": 40},
    "failed gate": {"marker": "x", "color": "tab:red", "s": 40},
    "passed": {"marker": "o", "color": "tab:blue", "s": 40},
    "listed only": {"marker": "o", "color": "tab:cyan", "s": 40},  # passed, but not eligible to be chosen
}


def chart_png(report: PrepReport) -> bytes:
    import matplotlib.pyplot as plt

    fig, _boxes = figure(report)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None}, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def figure(report: PrepReport) -> tuple[Any, list[tuple[list[Bbox], list[Bbox]]]]:
    """The chart's figure, and for each plot the boxes (in pixels) of its numbers and of its markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = entries_of(report)
    boxes = []
    metric = report.metric.value
    fig = plt.figure(figsize=(17, 6.2), dpi=100)
    grid = fig.add_gridspec(1, 3, width_ratios=(1, 1, 1.2), wspace=0.22)
    left, right, table = fig.add_subplot(grid[0]), fig.add_subplot(grid[1]), fig.add_subplot(grid[2])
    limit = report.baseline_accuracy + (
        report.max_accuracy_drop if report.lower_is_better else -report.max_accuracy_drop
    )
    for axis, field, label in (
        (left, "size_bytes", "artifact size (bytes, log)"),
        (right, "latency_p50_us", "single-sample latency p50 (µs, log)"),
    ):
        points = [(float(getattr(e, field)), e.accuracy) for e in entries]
        for kind, style in STYLES.items():
            mine = [p for p, e in zip(points, entries) if status(e) == kind]
            if mine:
                axis.scatter([p[0] for p in mine], [p[1] for p in mine], label=kind, zorder=3, **style)
        axis.axhline(limit, color="tab:red", linestyle="--", linewidth=0.8, label="gate")
        axis.set_xscale("log")
        axis.set_xlabel(label)
        axis.set_ylabel(f"{metric} ({'lower' if report.lower_is_better else 'higher'} is better)")
        axis.grid(True, alpha=0.3)
        _frame(axis, points, limit)
        boxes.append(_place(fig, axis, points, [status(e) for e in entries]))
    left.legend(loc="best", fontsize=8)
    _table(table, entries, metric)
    fig.suptitle(
        f"modelprep {report.key[:12]}: chosen {report.variant} (objective {report.objective.value}, "
        f"gate: at most {report.max_accuracy_drop:g} {metric} worse than the float model)",
        fontsize=11,
    )
    return fig, boxes


def _frame(axis: Axes, points: list[tuple[float, float]], limit: float) -> None:
    """Limits with room around the points for their numbers (log x: a factor; y: a share of the range)."""
    xs = [p[0] for p in points if p[0] > 0]
    ys = [p[1] for p in points] + [limit]
    low, high = min(xs), max(xs)
    span = math.log10(high / low) if high > low else 1.0
    axis.set_xlim(low / 10 ** (0.12 * span + 0.05), high * 10 ** (0.12 * span + 0.05))
    ybot, ytop = min(ys), max(ys)
    pad = (ytop - ybot) * 0.15 or max(abs(ytop) * 0.01, 0.01)
    axis.set_ylim(ybot - pad, ytop + pad)


def _place(fig: Any, axis: Axes, points: list[tuple[float, float]], kinds: list[str]) -> tuple[list[Bbox], list[Bbox]]:
    """Number each point, every number's box clear of the others and of every marker; returns the
    numbers' boxes and the markers'."""
    from matplotlib.transforms import Bbox

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    frame = axis.get_window_extent(renderer)
    to_px = axis.transData.transform
    pixels = [tuple(to_px(p)) for p in points]
    # A marker's box: half its side is sqrt(area in points²) / 2, in pixels, plus a pixel of air.
    half = [math.sqrt(STYLES[kind]["s"]) / 2 * fig.dpi / 72 + 1 for kind in kinds]
    markers = [Bbox.from_extents(x - h, y - h, x + h, y + h) for (x, y), h in zip(pixels, half)]
    placed: list[Bbox] = []
    # Crowded points first: they have the fewest free spots.
    order = sorted(range(len(points)), key=lambda i: -sum(math.dist(pixels[i], q) < 30 for q in pixels))
    for i in order:
        x, y = pixels[i]
        probe = axis.text(0, 0, str(i + 1), fontsize=8, fontweight="bold")
        width, height = _size(probe, renderer)
        probe.remove()
        spot = _free_spot(x, y, width, height, frame, [*placed, *markers])
        sx, sy = spot if spot is not None else (x, y + RINGS_PX[0])
        far = math.dist((sx, sy), (x, y)) > RINGS_PX[1]
        axis.annotate(
            str(i + 1),
            points[i],
            xytext=tuple(axis.transData.inverted().transform((sx, sy))),
            textcoords="data",
            fontsize=8,
            fontweight="bold",
            ha="center",
            va="center",
            zorder=4,
            annotation_clip=False,
            arrowprops={"arrowstyle": "-", "color": "0.55", "linewidth": 0.6, "shrinkA": 4, "shrinkB": 4}
            if far
            else None,
        )
        placed.append(Bbox.from_extents(sx - width / 2, sy - height / 2, sx + width / 2, sy + height / 2))
    return placed, markers


def _size(text: Any, renderer: Any) -> tuple[float, float]:
    box = text.get_window_extent(renderer)
    return box.width + 3.0, box.height + 2.0


def _free_spot(
    x: float, y: float, width: float, height: float, frame: Bbox, taken: list[Bbox]
) -> tuple[float, float] | None:
    from matplotlib.transforms import Bbox

    for radius in RINGS_PX:
        for angle in ANGLES:
            sx = x + radius * math.cos(math.radians(angle))
            sy = y + radius * math.sin(math.radians(angle))
            box = Bbox.from_extents(sx - width / 2, sy - height / 2, sx + width / 2, sy + height / 2)
            inside = frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1
            if inside and not any(box.overlaps(other) for other in taken):
                return sx, sy
    return None


def _table(axis: Axes, entries: list[Measure], metric: str) -> None:
    """The names beside the plots: number, variant, bytes, p50, the metric and the gate's word."""
    from matplotlib.transforms import Bbox

    axis.axis("off")
    rows = [
        [str(i), e.name, f"{e.size_bytes:,}", f"{e.latency_p50_us:,.1f}", f"{e.accuracy:.4f}", status(e)]
        for i, e in enumerate(entries, 1)
    ]
    table = axis.table(
        cellText=rows,
        colLabels=["#", "variant", "bytes", "p50 µs", metric, "gate"],
        cellLoc="left",
        colLoc="left",
        bbox=Bbox.from_bounds(0.0, 0.0, 1.0, min(1.0, 0.055 * (len(rows) + 1))),
        colWidths=[0.05, 0.27, 0.17, 0.15, 0.14, 0.22],
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    for (row, _col), cell in table.get_celld().items():
        cell.set_edgecolor("0.85")
        if row == 0:
            cell.set_text_props(fontweight="bold")
        elif status(entries[row - 1]) == "chosen":
            cell.set_facecolor("#e3f4e3")
        elif status(entries[row - 1]) == "failed gate":
            cell.set_text_props(color="tab:red")

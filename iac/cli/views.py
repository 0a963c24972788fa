"""How the CLI shows things: the prep report, a load-test result, the service status, a model diff."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

if TYPE_CHECKING:
    from iac.deploy.targets import TargetStatus
    from modelprep.report import Measure, PrepReport

out = Console()
err = Console(stderr=True)


def print_report(report: PrepReport, artifact: Path, cached: bool) -> None:
    from rich.table import Table

    console = out if out.is_terminal else Console(width=200)  # a pipe or a log gets the whole table
    metric = report.metric.value
    # A lower-is-better metric (mae, KL divergence) is a number, not a share shown in points.
    numeric = report.lower_is_better or metric == "mae"
    verb = "raise" if report.lower_is_better else "lose"
    table = Table(
        title=f"prep {report.key[:12]}{' (cached)' if cached else ''}: objective {report.objective.value}, "
        f"gate: {verb} {metric} by at most {_loss(numeric, report.max_accuracy_drop)}"
    )
    columns = ("name", "runtime", "bytes", "gzip", metric, "drop", "p50 µs", "p99 µs", "batch-32 /s", "")
    for column in columns:
        table.add_column(column, justify="left" if column in ("name", "runtime", "") else "right", no_wrap=True)
    for entry in report.baselines:
        table.add_row(*_cells(entry, numeric), "baseline", style="dim")
    table.add_section()
    notes: list[str] = []
    for entry in report.variants:
        if entry.chosen:
            mark = "[bold green]chosen[/]"
        elif not entry.passed_gate:
            mark = "[red]fails gate[/]"
        elif not entry.eligible:
            mark = "[yellow]listed only[/]"
            notes.append(f"{entry.name}: listed only ({entry.not_eligible_because or ''})")
        else:
            mark = "passes"
        if entry.notes.sparsity is not None:
            mark += f" [dim]sparsity {entry.notes.sparsity:.2f}[/]"
        if entry.notes.int8_fallback:
            notes.append(f"{entry.name}: {entry.notes.int8_fallback}")
        n = entry.notes
        if n.top1_agreement is not None:  # text generation: what the KL column does not say
            notes.append(
                f"{entry.name}: top-1 agreement {n.top1_agreement:.1%}, perplexity {n.perplexity:.2f}, "
                f"prompt {n.prompt_tokens_per_s:,.0f} tok/s, generation {n.generation_tokens_per_s:,.1f} tok/s, "
                f"peak RSS {(n.peak_rss_bytes or 0) / 2**20:,.0f} MiB at context {n.context_length}"
            )
        table.add_row(*_cells(entry, numeric), mark, style="bold" if entry.chosen else None)
    console.print(table)
    for note in dict.fromkeys(notes):
        console.print(f"  note {note}", highlight=False, soft_wrap=True)
    reference = report.reference
    ratio = f"{report.size_bytes / reference.size_bytes:.0%} of float32 LiteRT; " if reference else ""
    console.print(
        f"chosen [bold]{report.variant}[/] ({report.runtime}): {report.choice}; "
        f"{metric} {'rise' if report.lower_is_better else 'drop'} {_loss(numeric, report.accuracy_drop)} "
        f"(allowed {_loss(numeric, report.max_accuracy_drop)}); "
        f"{ratio}artifact {artifact}",
        highlight=False,
        soft_wrap=True,
    )
    chart = artifact.parent / "report.png"
    if chart.is_file():
        console.print(f"chart {chart}", highlight=False, soft_wrap=True)


def _loss(numeric: bool, value: float) -> str:
    return f"{value:.4f}" if numeric else f"{value * 100:.2f} points"


def _cells(entry: Measure, numeric: bool) -> list[str]:
    drop = entry.accuracy_drop
    return [
        entry.name,
        entry.runtime,
        f"{entry.size_bytes:,}",
        f"{entry.gzip_bytes:,}",
        f"{entry.accuracy:.4f}",
        "" if drop is None else (f"{drop:.4f}" if numeric else f"{drop * 100:.2f}"),
        f"{entry.latency_p50_us:,.1f}",
        f"{entry.latency_p99_us:,.1f}",
        f"{entry.throughput_per_s:,.0f}",
    ]


def print_bench(result: Any, target: str, concurrency: int, duration: float) -> None:
    from rich.table import Table

    table = Table(title=f"{target} · c={concurrency} · {duration:g} s · {result.processes} client processes")
    for column in ("requests/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "requests", "errors"):
        table.add_column(column, justify="right")
    lat = result.latency_ms
    table.add_row(
        f"{result.throughput_rps:,.1f}",
        f"{lat['p50']:.2f}",
        f"{lat['p95']:.2f}",
        f"{lat['p99']:.2f}",
        f"{lat['max']:.2f}",
        f"{result.requests:,}",
        f"{result.errors:,}",
    )
    out.print(table)
    if result.errors:
        out.print(f"[red]{result.errors} errors[/]; statuses {result.statuses} (0 = connection error)")


def print_status(state: TargetStatus) -> None:
    serving = state.serving
    out.print(f"endpoint  {state.endpoint}")
    if serving:
        out.print(
            f"serving   {serving.get('variant')} (artifact {str(serving.get('artifact_sha256'))[:12]}, "
            f"{serving.get('size_bytes')} bytes, accuracy {serving.get('accuracy')})"
        )
    else:
        out.print("serving   [red]nothing answers[/] (not deployed, or the proxy is down)")
    out.print(f"replicas  {state.ready}/{state.wanted} ready")
    for name, container_status, health in state.replicas:
        out.print(f"          {name}  {container_status}  {health}")
    out.print(f"proxy     {state.proxy or 'missing'}")
    out.print(f"healer    {'running' if state.healer else '[red]not running[/] (pulumi refresh, then pulumi up)'}")


def print_diff(name: str, changes: list[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"model changes for {name}")
    for column in ("", "deployed", "model.yaml"):
        table.add_column(column)
    for change in changes:
        table.add_row(change.field, change.deployed, change.edited, style="bold yellow" if change.changed else "")
    out.print(table)
    count = sum(c.changed for c in changes)
    out.print(f"{count} model change(s); `pulumi preview --diff` shows the infrastructure changes")

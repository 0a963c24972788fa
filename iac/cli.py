"""`modelstack`: validate, schema, prep, render, predict. Heavy imports happen inside commands
so `modelstack --help` is instant; only UserError is caught (exit 2, no traceback)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from modelprep.errors import UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="model.yaml → optimized model → image → pulumi up.")
out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

SpecArg = Annotated[Path, typer.Argument(help="Path to model.yaml")]


def user_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            for problem in exc.problems:
                err.print(f"[bold red]error[/] {problem}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
    return wrapper  # type: ignore[return-value]


@app.command()
@user_errors
def validate(spec: SpecArg) -> None:
    """Check model.yaml and the files it names; report every problem at once."""
    from iac.load import load_resolved

    resolved = load_resolved(spec)
    opt = resolved.spec.optimize
    if opt.variants:
        what = "variants " + ", ".join(v.value for v in opt.variants)
    elif opt.quantization is not None:
        what = f"{opt.quantization.value} quantization"
    else:
        what = f"objective {opt.objective.value}"
    out.print(f"[green]ok[/] {spec}: service {resolved.name!r}, {what}, port {resolved.spec.deploy.host_port}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of model.yaml (for editor completion)."""
    from iac.spec import ModelSpec

    sys.stdout.write(json.dumps(ModelSpec.model_json_schema(), indent=2, sort_keys=True) + "\n")


@app.command()
@user_errors
def prep(
    spec: SpecArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON: baselines and variants")] = False,
    all_variants: Annotated[bool, typer.Option("--all-variants", help="Evaluate every technique, whatever the spec chose")] = False,
) -> None:
    """Build, measure and gate the candidate variants; choose one by optimize.objective."""
    from iac.load import load_resolved
    from iac.pipeline import prep_request

    resolved = load_resolved(spec)
    result = _run_prep_with_progress(prep_request(resolved, all_variants=all_variants))
    if as_json:
        sys.stdout.write(json.dumps(result.report, indent=2, sort_keys=True) + "\n")
        return
    _print_report(result.report, result.artifact_path, result.cached)


def _run_prep_with_progress(request: Any) -> Any:
    """prep with Rich progress bars on stderr: one per stage (variants, each fine-tuning)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from modelprep.prep import prep as run_prep

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bars:
        status = bars.add_task("prep", total=None)
        tasks: dict[str, Any] = {}

        def step(name: str, done: int, total: int) -> None:
            if name not in tasks:
                tasks[name] = bars.add_task(name, total=max(total, 1))
            bars.update(tasks[name], completed=done, total=max(total, 1))

        result = run_prep(request, progress=lambda msg: bars.update(status, description=f"prep: {msg}"), step=step)
        bars.update(status, total=1, completed=1)
    return result


def _print_report(report: dict[str, Any], artifact: Path, cached: bool) -> None:
    from rich.table import Table

    metric = report.get("metric", "accuracy")
    table = Table(title=f"prep {report['key'][:12]}{' (cached)' if cached else ''}: objective {report.get('objective')}, "
                        f"gate: lose at most {_loss(metric, report['max_accuracy_drop'])}")
    columns = ("name", "runtime", "bytes", "gzip", metric, "drop", "p50 µs", "p99 µs", "batch-32 /s", "")
    for column in columns:
        table.add_column(column, justify="left" if column in ("name", "runtime", "") else "right")
    reference = next((b for b in report["baselines"] if b["name"] == "litert-float32"), None)
    for entry in report["baselines"]:
        table.add_row(*_cells(entry, metric), "[dim]baseline[/]", style="dim")
    table.add_section()
    for entry in report["variants"]:
        if entry.get("chosen"):
            mark = "[bold green]chosen[/]"
        elif not entry.get("passed_gate"):
            mark = "[red]fails the gate[/]"
        elif not entry.get("eligible", True):
            mark = f"[yellow]listed only[/] ({entry.get('not_eligible_because', '')})"
        else:
            mark = ""
        note = "; ".join(f"{k} {v}" for k, v in (entry.get("notes") or {}).items() if k in ("sparsity", "int8_fallback"))
        table.add_row(*_cells(entry, metric), mark + (f" [dim]{note}[/]" if note else ""),
                      style="bold" if entry.get("chosen") else None)
    out.print(table)
    ratio = f"{report['size_bytes'] / reference['size_bytes']:.0%} of float32 LiteRT; " if reference else ""
    out.print(f"chosen [bold]{report['variant']}[/] ({report['runtime']}): {report.get('choice', '')}; "
              f"{metric} drop {_loss(metric, report['accuracy_drop'])} (allowed {_loss(metric, report['max_accuracy_drop'])}); "
              f"{ratio}artifact {artifact}", highlight=False, soft_wrap=True)
    chart = artifact.parent / "report.png"
    if chart.is_file():
        out.print(f"chart {chart}", highlight=False, soft_wrap=True)


def _loss(metric: str, value: float) -> str:
    return f"{value:.4f}" if metric == "mae" else f"{value * 100:.2f} points"


def _cells(entry: dict[str, Any], metric: str) -> list[str]:
    drop = entry.get("accuracy_drop")
    return [
        entry["name"], entry["runtime"], f"{entry['size_bytes']:,}", f"{entry['gzip_bytes']:,}",
        f"{entry['accuracy']:.4f}", "" if drop is None else (f"{drop:.4f}" if metric == "mae" else f"{drop * 100:.2f}"),
        f"{entry['latency_p50_us']:,.1f}", f"{entry['latency_p99_us']:,.1f}", f"{entry['throughput_per_s']:,.0f}",
    ]


@app.command()
@user_errors
def render(spec: SpecArg, output: Annotated[Path, typer.Option("-o", "--output", help="Directory for the build context")]) -> None:
    """Prep (cached) and write a complete Docker build context to OUTPUT."""
    from iac.load import load_resolved
    from iac.pipeline import prep_request
    from iac.render import render as render_context
    from modelprep.prep import prep as run_prep

    resolved = load_resolved(spec)
    with err.status("prep", spinner="dots") as status:
        result = run_prep(prep_request(resolved), progress=lambda msg: status.update(f"prep: {msg}"))
    files = render_context(resolved, result.artifact_path, result.report, output)
    out.print(f"[green]rendered[/] {len(files)} files into {output}; build it with: docker build {output}")


@app.command()
@user_errors
def predict(
    spec: SpecArg,
    index: Annotated[int, typer.Option(help="Which evaluation sample to send")] = 0,
    url: Annotated[str | None, typer.Option(help="Endpoint (default: from the spec)")] = None,
) -> None:
    """POST one evaluation sample to the running service and print the predicted class."""
    import urllib.error
    import urllib.request

    import numpy as np

    from iac.load import load_resolved
    from iac.pipeline import endpoint

    resolved = load_resolved(spec)
    with np.load(resolved.evaluation_path) as data:
        x, y = data["x"], data["y"]
    if not 0 <= index < len(x):
        raise UserError.single("--index", "", f"{index} is out of range", f"use 0 to {len(x) - 1}")
    target = url or endpoint(resolved)
    body = json.dumps({"instances": [x[index].tolist()]}).encode()
    request = urllib.request.Request(target, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            scores = json.loads(response.read())["predictions"][0]
    except (urllib.error.URLError, ConnectionError) as exc:
        raise UserError.single(target, "", f"the service did not answer ({exc})", "run `pulumi up` in the stack first") from None
    predicted = int(np.argmax(scores))
    out.print(f"endpoint {target}")
    out.print(f"sample {index}: predicted {predicted} (label {int(y[index])}, confidence {max(scores):.3f})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

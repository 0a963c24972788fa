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
    out.print(f"[green]ok[/] {spec}: service {resolved.name!r}, "
              f"{resolved.spec.optimize.quantization.value} quantization, port {resolved.spec.deploy.host_port}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of model.yaml (for editor completion)."""
    from iac.spec import ModelSpec

    sys.stdout.write(json.dumps(ModelSpec.model_json_schema(), indent=2, sort_keys=True) + "\n")


@app.command()
@user_errors
def prep(spec: SpecArg, as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON")] = False) -> None:
    """Compress and evaluate the model; refuse it if it loses more accuracy than allowed."""
    from iac.load import load_resolved
    from iac.pipeline import prep_request
    from modelprep.prep import prep as run_prep

    resolved = load_resolved(spec)
    with err.status("prep", spinner="dots") as status:
        result = run_prep(prep_request(resolved), progress=lambda msg: status.update(f"prep: {msg}"))
    if as_json:
        sys.stdout.write(json.dumps(result.report, indent=2, sort_keys=True) + "\n")
        return
    _print_report(result.report, result.artifact_path, result.cached)


def _print_report(report: dict[str, Any], artifact: Path, cached: bool) -> None:
    from rich.table import Table

    ref = report["baselines"]["litert_float32"]
    table = Table(title=f"prep {report['key'][:12]}{' (cached)' if cached else ''}")
    for column in ("variant", "runtime", "bytes", "accuracy"):
        table.add_column(column, justify="right" if column in ("bytes", "accuracy") else "left")
    table.add_row("keras float (baseline)", "keras", "", f"{report['baseline_accuracy']:.4f}")
    table.add_row("float32 (reference)", "litert", f"{ref['size_bytes']:,}", f"{ref['accuracy']:.4f}")
    table.add_row(f"[bold]{report['variant']}[/] (chosen)", report["runtime"], f"{report['size_bytes']:,}", f"{report['accuracy']:.4f}")
    out.print(table)
    out.print(f"accuracy drop {report['accuracy_drop'] * 100:.2f} points (allowed {report['max_accuracy_drop'] * 100:.2f}); "
              f"{report['size_bytes'] / ref['size_bytes']:.0%} of float32; artifact {artifact}")


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

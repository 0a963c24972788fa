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
            problems = exc.problems
            if isinstance(kwargs.get("spec"), Path):  # modelprep names "model.yaml"; name the real file:line
                from iac.load import locate

                problems = locate(problems, kwargs["spec"])
            for problem in problems:
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

    console = out if out.is_terminal else Console(width=200)  # a pipe or a log gets the whole table
    metric = report.get("metric", "accuracy")
    table = Table(title=f"prep {report['key'][:12]}{' (cached)' if cached else ''}: objective {report.get('objective')}, "
                        f"gate: lose at most {_loss(metric, report['max_accuracy_drop'])} of {metric}")
    columns = ("name", "runtime", "bytes", "gzip", metric, "drop", "p50 µs", "p99 µs", "batch-32 /s", "")
    for column in columns:
        table.add_column(column, justify="left" if column in ("name", "runtime", "") else "right", no_wrap=True)
    reference = next((b for b in report["baselines"] if b["name"] == "litert-float32"), None)
    for entry in report["baselines"]:
        table.add_row(*_cells(entry, metric), "baseline", style="dim")
    table.add_section()
    notes: list[str] = []
    for entry in report["variants"]:
        if entry.get("chosen"):
            mark = "[bold green]chosen[/]"
        elif not entry.get("passed_gate"):
            mark = "[red]fails gate[/]"
        elif not entry.get("eligible", True):
            mark = "[yellow]listed only[/]"
            notes.append(f"{entry['name']}: listed only ({entry.get('not_eligible_because', '')})")
        else:
            mark = "passes"
        extra = entry.get("notes") or {}
        if "sparsity" in extra:
            mark += f" [dim]sparsity {extra['sparsity']:.2f}[/]"
        if "int8_fallback" in extra:
            notes.append(f"{entry['name']}: {extra['int8_fallback']}")
        table.add_row(*_cells(entry, metric), mark, style="bold" if entry.get("chosen") else None)
    console.print(table)
    for note in dict.fromkeys(notes):
        console.print(f"  note {note}", highlight=False, soft_wrap=True)
    ratio = f"{report['size_bytes'] / reference['size_bytes']:.0%} of float32 LiteRT; " if reference else ""
    console.print(f"chosen [bold]{report['variant']}[/] ({report['runtime']}): {report.get('choice', '')}; "
                  f"{metric} drop {_loss(metric, report['accuracy_drop'])} (allowed {_loss(metric, report['max_accuracy_drop'])}); "
                  f"{ratio}artifact {artifact}", highlight=False, soft_wrap=True)
    chart = artifact.parent / "report.png"
    if chart.is_file():
        console.print(f"chart {chart}", highlight=False, soft_wrap=True)


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


@app.command()
@user_errors
def serve(
    spec: SpecArg,
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port)")] = 8501,
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    max_batch_size: Annotated[int | None, typer.Option(help="Override serving.max_batch_size")] = None,
    max_latency_ms: Annotated[float | None, typer.Option(help="Override serving.max_latency_ms")] = None,
    threads: Annotated[int | None, typer.Option(help="Override serving.threads")] = None,
) -> None:
    """Run the model server locally, without Docker: the same server and config the image runs."""
    import os
    import signal
    import subprocess
    import tempfile

    from iac.load import load_resolved
    from iac.pipeline import prep_request
    from iac.render import REPO, serving_config
    from modelprep.prep import prep as run_prep

    resolved = load_resolved(spec)
    with err.status("prep", spinner="dots") as status:
        result = run_prep(prep_request(resolved), progress=lambda msg: status.update(f"prep: {msg}"))
    config = serving_config(resolved, result.report)
    config.update(artifact=str(result.artifact_path), host=host, port=port)
    for key, value in (("max_batch_size", max_batch_size), ("max_latency_ms", max_latency_ms), ("threads", threads)):
        if value is not None:
            config[key] = value
    key_env = config.get("api_key_env")
    if key_env and not os.environ.get(key_env):
        raise UserError.single("serving.api_key_env", "", f"the spec requires an API key but ${key_env} is not set",
                               f"export {key_env}=<key> before `modelstack serve`")
    with tempfile.TemporaryDirectory(prefix="modelstack-serve-") as folder:
        config_path = Path(folder) / "serving.json"
        config_path.write_text(json.dumps(config, indent=2))
        err.print(f"serving {resolved.name!r} ({result.report.get('variant')}, {config['runtime']}) on "
                  f"http://{host}:{port} — Ctrl-C stops; JSON logs follow", highlight=False, soft_wrap=True)
        env = {**os.environ, "MODELSTACK_SERVING_CONFIG": str(config_path),
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        proc = subprocess.Popen([sys.executable, "-m", "serving.server"], env=env)
        forward = lambda signum, _frame: proc.send_signal(signum)  # noqa: E731
        previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            code = proc.wait()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
    if code:
        raise typer.Exit(code)


@app.command()
@user_errors
def bench(
    url: Annotated[str, typer.Argument(help="Base URL (http://host:port) or the full predict/infer URL")],
    spec: Annotated[Path | None, typer.Option(help="model.yaml: request bodies from its evaluation data, model name for the path")] = None,
    body: Annotated[Path | None, typer.Option(help="File with one JSON request body (instead of --spec)")] = None,
    protocol: Annotated[str, typer.Option(help="v1 (TF Serving predict) or v2 (Open Inference infer)")] = "v1",
    concurrency: Annotated[int, typer.Option("-c", "--concurrency", min=1, max=4096, help="Connections, each one request at a time")] = 16,
    duration: Annotated[float, typer.Option("-d", "--duration", min=0.1, help="Measured seconds")] = 10.0,
    warmup: Annotated[float, typer.Option(min=0.0, help="Unmeasured seconds first")] = 1.0,
    processes: Annotated[int | None, typer.Option(help="Load-generating processes (default: one per CPU)")] = None,
    api_key: Annotated[str | None, typer.Option(envvar="MODELSTACK_API_KEY", help="Sent as Authorization: Bearer")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Load-test a running server: throughput, p50/p95/p99 latency, errors."""
    from urllib.parse import urlsplit

    from serving.loadgen import run_load

    if protocol not in ("v1", "v2"):
        raise UserError.single("--protocol", "", f"{protocol!r} is not a protocol", "use v1 or v2")
    if (spec is None) == (body is None):
        raise UserError.single("bench", "", "give the request body with exactly one of --spec or --body",
                               "--spec model.yaml (evaluation data) or --body request.json")
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise UserError.single(url, "", "is not an http:// URL", "e.g. http://127.0.0.1:8501")
    has_path = parts.path not in ("", "/")
    if body is not None:
        if not body.is_file():
            raise UserError.single(str(body), "", "no such file", "give a file with one JSON request body")
        bodies = [body.read_bytes()]
        if not has_path:
            raise UserError.single(url, "", "has no path and --body does not say which model",
                                   "give the full URL, e.g. http://127.0.0.1:8501/v1/models/NAME:predict")
        target = url
    else:
        import numpy as np

        from iac.load import load_resolved

        assert spec is not None
        resolved = load_resolved(spec)
        name, tensor = resolved.name, resolved.spec.model.inputs[0]
        with np.load(resolved.evaluation_path) as data:
            samples = data["x"][:64]
        if protocol == "v1":
            bodies = [json.dumps({"instances": [s.tolist()]}).encode() for s in samples]
            path = f"/v1/models/{name}:predict"
        else:
            bodies = [json.dumps({"inputs": [{"name": tensor.name, "shape": [1, *s.shape], "datatype": "FP32",
                                              "data": s.ravel().tolist()}]}).encode() for s in samples]
            path = f"/v2/models/{name}/infer"
        target = url if has_path else url.rstrip("/") + path
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    if not as_json:
        err.print(f"bench {target}: {concurrency} connections, {warmup:g} s warm-up + {duration:g} s", highlight=False)
    try:
        result = run_load(target, bodies, concurrency=concurrency, duration=duration, processes=processes,
                          headers=headers, warmup=warmup)
    except ValueError as exc:
        raise UserError.single(url, "", str(exc), "check the URL") from None
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    else:
        from rich.table import Table

        table = Table(title=f"{target} · c={concurrency} · {duration:g} s · {result.processes} client processes")
        for column in ("requests/s", "p50 ms", "p95 ms", "p99 ms", "max ms", "requests", "errors"):
            table.add_column(column, justify="right")
        lat = result.latency_ms
        table.add_row(f"{result.throughput_rps:,.1f}", f"{lat['p50']:.2f}", f"{lat['p95']:.2f}", f"{lat['p99']:.2f}",
                      f"{lat['max']:.2f}", f"{result.requests:,}", f"{result.errors:,}")
        out.print(table)
        if result.errors:
            out.print(f"[red]{result.errors} errors[/]; statuses {result.statuses} (0 = connection error)")
    if result.requests and result.errors == result.requests:
        raise typer.Exit(1)


StackOpt = Annotated[str, typer.Option("--stack", help="The Pulumi stack the spec is deployed in")]


@app.command()
@user_errors
def status(spec: SpecArg, stack: StackOpt = "dev") -> None:
    """Show the endpoint, the version serving, and how many replicas are ready."""
    from iac.load import load_resolved
    from iac.ops import status as service_status

    resolved = load_resolved(spec)
    state = service_status(resolved, stack)
    serving = state.serving
    out.print(f"endpoint  {state.endpoint}")
    if serving:
        out.print(f"serving   {serving.get('variant')} (artifact {str(serving.get('artifact_sha256'))[:12]}, "
                  f"{serving.get('size_bytes')} bytes, accuracy {serving.get('accuracy')})")
    else:
        out.print("serving   [red]nothing answers[/] (not deployed, or the proxy is down)")
    out.print(f"replicas  {state.ready}/{resolved.spec.deploy.replicas} ready")
    for name, container_status, health in state.replicas:
        out.print(f"          {name}  {container_status}  {health}")
    out.print(f"proxy     {state.proxy or 'missing'}")
    out.print(f"healer    {'running' if state.healer else '[red]not running[/] (pulumi refresh, then pulumi up)'}")
    if not serving or state.ready < resolved.spec.deploy.replicas:
        raise typer.Exit(1)


@app.command()
@user_errors
def diff(spec: SpecArg) -> None:
    """What changes in the model (variant, size, accuracy, signature) if this spec is rolled out.
    Uses cached prep results; says which prep must run first."""
    from rich.table import Table

    from iac.load import load_resolved
    from iac.ops import model_diff

    resolved = load_resolved(spec)
    changes, missing = model_diff(resolved)
    if missing:
        err.print(missing)
        raise typer.Exit(1)
    table = Table(title=f"model changes for {resolved.name}")
    for column in ("", "deployed", "model.yaml"):
        table.add_column(column)
    for change in changes:
        style = "bold yellow" if change.changed else ""
        table.add_row(change.field, change.deployed, change.edited, style=style)
    out.print(table)
    count = sum(c.changed for c in changes)
    out.print(f"{count} model change(s); `pulumi preview --diff` shows the infrastructure changes")


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""`modelstack`: thin commands over the library (spec, prep, build, deploy targets). Heavy imports happen
inside commands so `modelstack --help` is instant; only UserError is caught (exit 2, no traceback)."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from iac.cli import views
from iac.cli.views import err, out
from iac.spec.errors import UserError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="model.yaml → optimized model → image → pulumi up.")
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
    from iac.spec.load import load_resolved

    resolved = load_resolved(spec)
    opt = resolved.spec.optimize
    if opt.variants:
        what = "variants " + ", ".join(v.value for v in opt.variants)
    elif opt.quantization is not None:
        what = f"{opt.quantization.value} quantization"
    else:
        what = f"objective {opt.objective.value}"
    out.print(f"[green]ok[/] {spec}: service {resolved.name!r}, {what}, target {resolved.spec.deploy.target}")


@app.command()
def schema() -> None:
    """Print the JSON Schema of model.yaml (for editor completion)."""
    from iac.spec.models import ModelSpec

    sys.stdout.write(json.dumps(ModelSpec.model_json_schema(), indent=2, sort_keys=True) + "\n")


@app.command()
@user_errors
def prep(
    spec: SpecArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON: baselines and variants")] = False,
    all_variants: Annotated[
        bool, typer.Option("--all-variants", help="Evaluate every technique, whatever the spec chose")
    ] = False,
) -> None:
    """Build, measure and gate the candidate variants; choose one by optimize.objective."""
    from iac.spec.load import load_resolved
    from modelprep.request import prep_request

    resolved = load_resolved(spec)
    result = _run_prep_with_progress(prep_request(resolved, all_variants=all_variants))
    if as_json:
        from modelprep.prep import report_json

        sys.stdout.write(report_json(result.report) + "\n")
        return
    views.print_report(result.report, result.artifact_path, result.cached)


def _run_prep_with_progress(request: Any) -> Any:
    """prep with Rich progress bars on stderr: one per stage (variants, each fine-tuning)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from modelprep.prep import prep as run_prep

    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
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


@app.command()
@user_errors
def render(
    spec: SpecArg, output: Annotated[Path, typer.Option("-o", "--output", help="Directory for the build context")]
) -> None:
    """Prep (cached) and write a complete Docker build context to OUTPUT."""
    from iac.build.render import render as render_context
    from iac.spec.load import load_resolved
    from modelprep.prep import prep as run_prep
    from modelprep.request import prep_request

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
    from iac.service_client import predict_sample
    from iac.spec.load import load_resolved

    result = predict_sample(load_resolved(spec), index, url)
    out.print(f"endpoint {result.endpoint}")
    out.print(
        f"sample {index}: predicted {result.predicted} (label {result.label}, confidence {result.confidence:.3f})"
    )


@app.command()
@user_errors
def serve(
    spec: SpecArg,
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port)")] = 8501,
    grpc_port: Annotated[
        int | None,
        typer.Option(
            help="Port of the V2 gRPC service (default: serving.grpc_port, or any free port with --port 0; "
            "0: any free port; -1: off)"
        ),
    ] = None,
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

    from iac.build.render import REPO, serving_config
    from iac.spec.load import load_resolved
    from modelprep.prep import prep as run_prep
    from modelprep.request import prep_request

    resolved = load_resolved(spec)
    with err.status("prep", spinner="dots") as status:
        result = run_prep(prep_request(resolved), progress=lambda msg: status.update(f"prep: {msg}"))
    config = serving_config(resolved, result.report, result.artifact_path)
    config.update(artifact=str(result.artifact_path), host=host, port=port)
    if grpc_port is not None:
        config["grpc_port"] = None if grpc_port < 0 else grpc_port
    elif port == 0 and config.get("grpc_port") is not None:
        config["grpc_port"] = 0  # any free port for HTTP: the same for gRPC
    for key, value in (("max_batch_size", max_batch_size), ("max_latency_ms", max_latency_ms), ("threads", threads)):
        if value is not None:
            config[key] = value
    key_env = config.get("api_key_env")
    if key_env and not os.environ.get(key_env):
        raise UserError.single(
            "serving.api_key_env",
            "",
            f"the spec requires an API key but ${key_env} is not set",
            f"export {key_env}=<key> before `modelstack serve`",
        )
    with tempfile.TemporaryDirectory(prefix="modelstack-serve-") as folder:
        config_path = Path(folder) / "serving.json"
        config_path.write_text(json.dumps(config, indent=2))
        grpc = f" and gRPC {host}:{config['grpc_port']}" if config.get("grpc_port") is not None else ""
        err.print(
            f"serving {resolved.name!r} ({result.report.variant}, {config['runtime']}) on "
            f"http://{host}:{port}{grpc} — Ctrl-C stops; JSON logs follow",
            highlight=False,
            soft_wrap=True,
        )
        env = {
            **os.environ,
            "MODELSTACK_SERVING_CONFIG": str(config_path),
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }
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
    spec: Annotated[
        Path | None,
        typer.Option(
            help="model.yaml: request bodies from its evaluation data, model name for the path, API key from serving.api_key_env"
        ),
    ] = None,
    body: Annotated[Path | None, typer.Option(help="File with one JSON request body (instead of --spec)")] = None,
    protocol: Annotated[str, typer.Option(help="v1 (TF Serving predict) or v2 (Open Inference infer)")] = "v1",
    concurrency: Annotated[
        int, typer.Option("-c", "--concurrency", min=1, max=4096, help="Connections, each one request at a time")
    ] = 16,
    duration: Annotated[float, typer.Option("-d", "--duration", min=0.1, help="Measured seconds")] = 10.0,
    warmup: Annotated[float, typer.Option(min=0.0, help="Unmeasured seconds first")] = 1.0,
    processes: Annotated[int | None, typer.Option(help="Load-generating processes (default: one per CPU)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON")] = False,
) -> None:
    """Load-test a running server: throughput, p50/p95/p99 latency, errors."""
    from iac.loadgen import bench_plan, run_load

    plan = bench_plan(url, spec, body, protocol)
    if not as_json:
        err.print(
            f"bench {plan.target}: {concurrency} connections, {warmup:g} s warm-up + {duration:g} s", highlight=False
        )
    try:
        result = run_load(
            plan.target,
            plan.bodies,
            concurrency=concurrency,
            duration=duration,
            processes=processes,
            headers=plan.headers or None,
            warmup=warmup,
        )
    except ValueError as exc:
        raise UserError.single(url, "", str(exc), "check the URL") from None
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    else:
        views.print_bench(result, plan.target, concurrency, duration)
    if result.requests and result.errors == result.requests:
        raise typer.Exit(1)


StackOpt = Annotated[str, typer.Option("--stack", help="The Pulumi stack the spec is deployed in")]


@app.command()
@user_errors
def status(spec: SpecArg, stack: StackOpt = "dev") -> None:
    """Show the endpoint, the version serving, and how many replicas are ready."""
    from iac.deploy.targets import target_of
    from iac.spec.load import load_resolved

    resolved = load_resolved(spec)
    state = target_of(resolved).status(resolved, stack)
    views.print_status(state)
    if not state.serving or state.ready < state.wanted:
        raise typer.Exit(1)


@app.command()
@user_errors
def diff(spec: SpecArg) -> None:
    """What changes in the model (variant, size, accuracy, signature) if this spec is rolled out.
    Uses cached prep results; says which prep must run first."""
    from iac.review import model_diff
    from iac.spec.load import load_resolved

    resolved = load_resolved(spec)
    changes, missing = model_diff(resolved)
    if missing:
        err.print(missing)
        raise typer.Exit(1)
    views.print_diff(resolved.name, changes)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

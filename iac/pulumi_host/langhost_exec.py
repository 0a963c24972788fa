"""Runs one Pulumi Python program on behalf of the language host (`iac.pulumi_host.langhost`).

The language host starts this module in a fresh interpreter for every `Run` call:

    python -u -m iac.pulumi_host.langhost_exec --monitor ADDR --engine ADDR --project P --stack S \
        [--organization O] [--root-directory DIR] [--parallel N] [--dry-run] PROGRAM [ARGS...]

A subprocess per run keeps the user's program (its imports, globals, threads and any crash)
isolated from the long-lived gRPC server. Stack config arrives through the environment as
`PULUMI_CONFIG` (JSON object) and `PULUMI_CONFIG_SECRET_KEYS` (JSON list), which keeps secrets
out of the process table.

Exit codes: 0 on success; `BAIL_EXIT_CODE` when the failure was already reported to the user
through the engine's log (the host then answers `bail`); anything else is an unreported crash.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import runpy
import sys
import traceback
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

# Shared with iac.pulumi_host.langhost; defined here so the host need not import the Pulumi SDK runtime.
BAIL_EXIT_CODE = 32

# The SDK performs each blocking gRPC call in the loop's default executor; a thread per
# in-flight call keeps registrations from queueing behind each other. The CLI's default
# parallelism is "unbounded" (a huge int), hence the cap.
_MAX_WORKERS = 256

# The SDK turns the monitor's UNAVAILABLE into a RunError with this text. It means the engine
# is stopping because of a failure it has already reported, so repeating it is noise.
_MONITOR_SHUTDOWN = "Resource monitor has terminated"


@dataclass(frozen=True)
class RunOptions:
    monitor: str
    engine: str
    project: str
    stack: str
    organization: str
    root_directory: str | None
    parallel: int
    dry_run: bool
    program: Path
    args: list[str]


def parse_args(argv: Sequence[str] | None = None) -> RunOptions:
    parser = argparse.ArgumentParser(prog="iac.pulumi_host.langhost_exec", description=__doc__)
    parser.add_argument("--monitor", required=True, help="resource monitor address")
    parser.add_argument("--engine", default="", help="engine address (for logging)")
    parser.add_argument("--project", required=True)
    parser.add_argument("--stack", required=True)
    parser.add_argument("--organization", default="organization")
    parser.add_argument("--root-directory", default=None)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("program", help="program file, or directory holding __main__.py")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    ns = parser.parse_args(argv)
    return RunOptions(
        monitor=ns.monitor,
        engine=ns.engine,
        project=ns.project,
        stack=ns.stack,
        organization=ns.organization or "organization",
        root_directory=ns.root_directory,
        parallel=ns.parallel,
        dry_run=ns.dry_run,
        program=Path(ns.program),
        args=list(ns.args),
    )


def resolve_main_file(program: Path) -> Path:
    """The file to execute: `program` itself, or the `__main__.py` inside it."""
    main_file = program / "__main__.py" if program.is_dir() else program
    if not main_file.is_file():
        raise FileNotFoundError(
            f"no Python program found at {main_file} "
            "(a Python project needs __main__.py, or `main:` in Pulumi.yaml naming a file)"
        )
    return main_file.resolve()


def configure_runtime(opts: RunOptions) -> None:
    """Point the SDK at the engine and load stack config, as the real host's runner does."""
    from pulumi.runtime import config, settings

    settings.reset_options(
        project=opts.project,
        stack=opts.stack,
        root_directory=opts.root_directory,
        parallel=opts.parallel,
        engine_address=opts.engine or None,
        monitor_address=opts.monitor,
        preview=opts.dry_run,
        organization=opts.organization,
    )
    # set_all_config is the only way to mark keys secret; the env fallback covers plain reads.
    config.set_all_config(config.get_config_env(), config.get_config_secret_keys_env())


def _program_thunk(main_file: Path, args: list[str]) -> Callable[[], None]:
    def run_program() -> None:
        # Python semantics for `python __main__.py`: the script's directory leads sys.path
        # (replacing the cwd entry that `-m` put there) and argv[0] is the script.
        program_dir = str(main_file.parent)
        if sys.path and sys.path[0] in ("", os.getcwd()):
            sys.path[0] = program_dir
        else:
            sys.path.insert(0, program_dir)
        sys.argv = [str(main_file), *args]
        runpy.run_path(str(main_file), run_name="__main__")

    return run_program


def _new_loop(parallel: int) -> asyncio.AbstractEventLoop:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    workers = min(max(parallel, 1) * 4, _MAX_WORKERS)
    loop.set_default_executor(ThreadPoolExecutor(max_workers=workers))
    return loop


def _close_loop(loop: asyncio.AbstractEventLoop) -> None:
    # A failed program can leave tasks pending; cancel them so closing the loop does not
    # print "Task was destroyed but it is pending!" over the real error.
    for task in asyncio.all_tasks(loop):
        task.cancel()
        with suppress(BaseException):
            loop.run_until_complete(task)
    loop.close()


def _is_runner_frame(filename: str) -> bool:
    from pulumi.runtime import stack

    return (
        filename in (__file__, stack.__file__)
        or filename.startswith("<frozen runpy>")
        or filename.startswith(os.path.dirname(asyncio.__file__))
    )


def _user_traceback(exc: BaseException) -> str:
    """The traceback without its leading runner, runpy, asyncio and SDK frames, which say
    nothing to the user; it then starts at the program's own code (or its SyntaxError)."""
    tb = traceback.TracebackException.from_exception(exc)
    frames = list(tb.stack)
    while frames and _is_runner_frame(frames[0].filename):
        frames.pop(0)
    tb.stack = traceback.StackSummary.from_list(frames)
    return "".join(tb.format())


def _report(message: str) -> int:
    """Send `message` to the engine's error log; fall back to stderr if the engine is gone."""
    from pulumi import log

    try:
        log.error(message)
        return BAIL_EXIT_CODE
    except Exception:  # noqa: BLE001 - engine unreachable: the host relays stderr instead
        print(message, file=sys.stderr, flush=True)
        return 1


def run(opts: RunOptions) -> int:
    import grpc
    from pulumi.automation._server import _suppress_unobserved_task_logging
    from pulumi.errors import RunError
    from pulumi.runtime.stack import run_in_stack

    # Faulted tasks nobody awaited are reported by the SDK itself; asyncio's copy is noise.
    _suppress_unobserved_task_logging()
    configure_runtime(opts)
    try:
        main_file = resolve_main_file(opts.program)
    except FileNotFoundError as exc:
        return _report(str(exc))

    loop = _new_loop(opts.parallel)
    try:
        loop.run_until_complete(run_in_stack(_program_thunk(main_file, opts.args)))
        return 0
    except RunError as exc:
        if str(exc).startswith(_MONITOR_SHUTDOWN):
            return BAIL_EXIT_CODE
        # RunError means "tell the user this, without a stack trace".
        return _report(str(exc))
    except SystemExit as exc:
        if exc.code in (None, 0):
            return 0
        return _report(f"Program exited with sys.exit({exc.code!r})")
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.UNAVAILABLE:
            # The engine is shutting down (e.g. a resource failed); it already said why.
            return BAIL_EXIT_CODE
        return _report(f"RPC error: {exc.details()}")
    except BaseException as exc:  # noqa: BLE001 - anything from user code becomes an error
        details = _user_traceback(exc)
        return _report(f"Program failed with an unhandled exception:\n{details}")
    finally:
        _close_loop(loop)
        sys.stdout.flush()
        sys.stderr.flush()


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""A Pulumi language host for Python, written in Python.

The Pulumi CLI runs `python` projects through a plugin executable named
`pulumi-language-python`. Upstream ships it as a Go binary that cannot be built from the Go
module proxy, so `scripts/pulumi_plugins.sh` installs a wrapper under that name which runs
`python -m iac.pulumi_host.langhost` with this repository's virtualenv.

Protocol: the CLI starts the plugin with some flags and the engine's gRPC address as the last
argument; the plugin serves the `LanguageRuntime` gRPC service on a free loopback port, prints
that port and a newline on stdout, and serves until it is killed. The CLI reads nothing else
from stdout, and relays whatever the plugin prints afterwards (the program's output) to the
user.

`Run` executes the program in a subprocess (`iac.pulumi_host.langhost_exec`) with this same interpreter, so
each deployment gets a clean interpreter and the server survives whatever the program does.
Dependencies are not installed here: they are managed by the project's virtualenv.
"""

from __future__ import annotations

import collections
import importlib.metadata
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from concurrent import futures
from pathlib import Path
from typing import IO, Any

import grpc
from google.protobuf import empty_pb2
from pulumi.automation._server import LanguageServer
from pulumi.runtime._grpc_settings import _GRPC_CHANNEL_OPTIONS
from pulumi.runtime.proto import language_pb2, language_pb2_grpc, plugin_pb2

from iac.pulumi_host.langhost_exec import BAIL_EXIT_CODE

_RUNNER_MODULE = "iac.pulumi_host.langhost_exec"
# Lines of the program's stderr quoted in the error when it dies without reporting why.
_STDERR_TAIL_LINES = 40
# The SDK's own plugin servers (the dynamic provider among them) use these: 400 MiB messages, as
# the engine sends whole stack configs and states; we send nothing that large.
_GRPC_OPTIONS = _GRPC_CHANNEL_OPTIONS


def _sdk_version() -> str:
    try:
        return importlib.metadata.version("pulumi")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _program_location(request: language_pb2.RunRequest) -> tuple[Path, Path, Path]:
    """(program path, working directory, project root) from a RunRequest.

    Newer CLIs fill `info`; the flat `pwd`/`program` fields are the deprecated fallback.
    """
    info = request.info
    program_dir = Path(info.program_directory or request.pwd or os.getcwd())
    entry_point = info.entry_point or request.program or "."
    pwd = Path(request.pwd or program_dir)
    root = Path(info.root_directory or pwd)
    return program_dir / entry_point, pwd, root


def runner_command(request: language_pb2.RunRequest, engine_address: str) -> list[str]:
    program, _, root = _program_location(request)
    cmd = [
        sys.executable,
        "-u",
        "-m",
        "iac.pulumi_host.plugin_guard",  # the program ends with the language host, even a killed one
        _RUNNER_MODULE,
        "--monitor",
        request.monitor_address,
        "--engine",
        engine_address,
        "--project",
        request.project,
        "--stack",
        request.stack,
        "--organization",
        request.organization or "organization",
        "--root-directory",
        str(root),
        "--parallel",
        str(request.parallel),
    ]
    if request.dryRun:
        cmd.append("--dry-run")
    cmd.append(str(program))
    cmd.extend(request.args)
    return cmd


def runner_env(request: language_pb2.RunRequest) -> dict[str, str]:
    env = dict(os.environ)
    env["PULUMI_CONFIG"] = json.dumps(dict(request.config))
    env["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(list(request.configSecretKeys))
    return env


def _tee_lines(src: IO[bytes], dst: IO[bytes], tail: collections.deque[str]) -> None:
    """Copy the program's stderr through to ours, remembering the last lines for errors."""
    for line in iter(src.readline, b""):
        dst.write(line)
        dst.flush()
        tail.append(line.decode("utf-8", "replace").rstrip("\n"))
    src.close()


def _exit_error(returncode: int, tail: Sequence[str]) -> str:
    if returncode < 0:
        try:
            what = f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            what = f"was killed by signal {-returncode}"
    else:
        what = f"exited with code {returncode}"
    message = f"Python program {what}"
    if tail:
        message += " after printing:\n" + "\n".join(tail)
    return message


class LanguageHost(LanguageServer):
    """The `LanguageRuntime` methods the CLI calls for preview/up/refresh/destroy/about.

    The SDK's `LanguageServer` (the Automation API's host for inline programs) answers
    `GetRequiredPlugins` and `GetRequiredPackages` as we would (nothing to pre-install); its `Run`
    runs a Python function inside the server, so ours replaces it with a program from disk run in
    a fresh interpreter.
    """

    def __init__(self, engine_address: str) -> None:
        super().__init__(program=None)  # type: ignore[arg-type] - no inline program: Run is ours
        self.engine_address = engine_address
        self._runs: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------

    def Handshake(self, request: language_pb2.LanguageHandshakeRequest, context: Any) -> Any:
        # The handshake carries the authoritative engine address; argv is the fallback.
        if request.engine_address:
            self.engine_address = request.engine_address
        return language_pb2.LanguageHandshakeResponse()

    def GetPluginInfo(self, request: empty_pb2.Empty, context: Any) -> plugin_pb2.PluginInfo:
        return plugin_pb2.PluginInfo(version=_sdk_version())

    def Cancel(self, request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
        self.terminate_runs()
        return empty_pb2.Empty()

    def terminate_runs(self) -> None:
        with self._lock:
            running = list(self._runs)
        for proc in running:
            if proc.poll() is None:
                proc.terminate()

    # -- dependencies and metadata ---------------------------------------------------------
    # GetRequiredPlugins / GetRequiredPackages: the SDK's answer (none); the dynamic provider
    # plugin is loaded on demand.

    def InstallDependencies(
        self, request: language_pb2.InstallDependenciesRequest, context: Any
    ) -> Iterator[language_pb2.InstallDependenciesResponse]:
        note = f"Python dependencies are managed by the modelstack virtualenv ({sys.prefix}); nothing to install.\n"
        yield language_pb2.InstallDependenciesResponse(stdout=note.encode())

    def About(self, request: language_pb2.AboutRequest, context: Any) -> Any:
        version = ".".join(str(part) for part in sys.version_info[:3])
        return language_pb2.AboutResponse(
            executable=sys.executable,
            version=version,
            metadata={"virtualenv": sys.prefix, "langhost": "iac.pulumi_host.langhost"},
        )

    def GetProgramDependencies(self, request: Any, context: Any) -> Any:
        seen: dict[str, str] = {}
        for dist in importlib.metadata.distributions():
            name = dist.metadata["Name"]
            if name and name not in seen:
                seen[name] = dist.version
        deps = [
            language_pb2.DependencyInfo(name=name, version=version)
            for name, version in sorted(seen.items(), key=lambda kv: kv[0].lower())
        ]
        return language_pb2.GetProgramDependenciesResponse(dependencies=deps)

    def RuntimeOptionsPrompts(self, request: Any, context: Any) -> Any:
        return language_pb2.RuntimeOptionsResponse()

    def Template(self, request: Any, context: Any) -> Any:
        return language_pb2.TemplateResponse()

    # -- running programs ------------------------------------------------------------------

    def Run(self, request: language_pb2.RunRequest, context: Any) -> language_pb2.RunResponse:
        _, pwd, _ = _program_location(request)
        tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL_LINES)
        try:
            proc = subprocess.Popen(
                runner_command(request, self.engine_address),
                cwd=pwd,
                env=runner_env(request),
                stdin=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        except OSError as exc:
            return language_pb2.RunResponse(error=f"could not start the Python program: {exc}")

        with self._lock:
            self._runs.add(proc)
        try:
            assert proc.stderr is not None
            _tee_lines(proc.stderr, sys.stderr.buffer, tail)
            returncode = proc.wait()
        finally:
            with self._lock:
                self._runs.discard(proc)

        if returncode == 0:
            return language_pb2.RunResponse()
        if returncode == BAIL_EXIT_CODE:
            return language_pb2.RunResponse(bail=True)
        return language_pb2.RunResponse(error=_exit_error(returncode, list(tail)))


def engine_address_from_argv(argv: Sequence[str]) -> str:
    """The CLI passes flags (`-root=...`, `-tracing ...`) and then the engine address last."""
    for arg in reversed(argv):
        if not arg.startswith("-") and ":" in arg:
            return arg
    return ""


def serve(argv: Sequence[str]) -> None:
    host = LanguageHost(engine_address_from_argv(argv))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=_GRPC_OPTIONS)
    language_pb2_grpc.add_LanguageRuntimeServicer_to_server(host, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    # The CLI waits for exactly this line before it talks to us.
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()

    def stop(signum: int, frame: object) -> None:
        host.terminate_runs()
        server.stop(grace=0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.wait_for_termination()


def main() -> None:
    serve(sys.argv[1:])


if __name__ == "__main__":
    main()

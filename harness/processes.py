"""Processes and ports the harness starts: a free port, a child with its log, waiting for it, stopping it.

Shared by the Docker sandboxes and the local Kubernetes cluster, which start many of each.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

_HANDED_OUT: set[int] = set()  # a port is free until its taker binds it: never hand it out twice


def free_port() -> int:
    """A free port below the kernel's ephemeral range (32768+): a published port inside it
    competes with the host's own outgoing connections, which a load test makes by the thousand."""
    for port in random.sample(range(20000, 32000), 200):
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    raise RuntimeError("no free port in 20000-32000")


def spawn(root: Path, name: str, argv: list[str], pids: dict[str, int]) -> subprocess.Popen[bytes]:
    """Start `argv` in its own session, its output in root/logs/<name>.log; its PID kept in `pids`."""
    log = open(root / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    pids[name] = proc.pid
    return proc


def wait_for(
    what: str, check: Callable[[], object], timeout: float, root: Path | None = None, log: str | None = None
) -> None:
    """Until `check()` is true; else fail with the tail of root/logs/<log>.log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.3)
    tail = ""
    if root is not None and log is not None and (root / "logs" / f"{log}.log").exists():
        tail = (root / "logs" / f"{log}.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s\n{tail}")


def terminate(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after `timeout`; waits for the process to be gone."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return
        except ChildProcessError:  # not our child (another process started it): poll its existence
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
        time.sleep(0.1)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return

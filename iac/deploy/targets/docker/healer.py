"""Healer: the stack's host process that restarts its dead containers (see iac/healer.py).

Its id is the process id; `refresh` notices a healer that is gone (e.g. after a reboot) and
the next `up` starts it again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from iac.deploy.dynamic import changed


class HealerProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        pid = _start(props)
        return CreateResult(id_=str(pid), outs={**props, "pid": pid})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=bool(changed(olds, news, ("owner", "config_dir", "python"))), replaces=[],
                          delete_before_replace=False)

    def update(self, id_: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        _stop(int(id_), news["owner"])
        return UpdateResult(outs={**news, "pid": _start(news)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props) if _alive(int(id_), props["owner"]) else ReadResult(None, {})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        _stop(int(id_), props["owner"])


def _start(props: dict[str, Any]) -> int:
    _stop_all(props["owner"])  # one healer per stack, even after an interrupted run
    config_dir = Path(props["config_dir"])
    config_dir.mkdir(parents=True, exist_ok=True)
    with open(config_dir / "healer.log", "ab") as log:
        process = subprocess.Popen(
            [props["python"], "-m", "iac.deploy.targets.docker.healer_daemon", "--owner", props["owner"], "--config-dir", str(config_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
        )
    time.sleep(0.3)
    if process.poll() is not None:
        raise RuntimeError(f"the healer exited at once ({process.returncode}); see {config_dir / 'healer.log'}")
    return process.pid


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int, owner: str) -> bool:
    line = _cmdline(pid)
    return "iac.deploy.targets.docker.healer_daemon" in line and f"--owner {owner} " in line + " "


def _stop(pid: int, owner: str) -> None:
    if _alive(pid, owner):
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not _alive(pid, owner):
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)


def healer_pids(owner: str) -> list[int]:
    """Every running healer of `owner` (normally one; more only after an interrupted run)."""
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit() and _alive(int(entry.name), owner)]


def _stop_all(owner: str) -> None:
    for pid in healer_pids(owner):
        _stop(pid, owner)


class Healer(Resource, module="modelstack", name="Healer"):
    pid: pulumi.Output[int]

    def __init__(self, name: str, *, owner: str, config_dir: str, opts: pulumi.ResourceOptions | None = None) -> None:
        props = {"owner": owner, "config_dir": config_dir, "python": sys.executable, "pid": None}
        super().__init__(HealerProvider(), name, props, opts)

"""Healer: the Pulumi resource for the stack's host process that restarts its dead containers.

The process itself is `healer_daemon`. A process id alone does not name it: after a reboot or a
long time the id may belong to anything. So the healer is known by three things, kept in the
resource's outputs and in `healer.json` in the stack's config directory: its pid, the start time
of that pid (`/proc/<pid>/stat`, clock ticks after boot: a recycled pid has another) and a random
token on its command line and in its environment. Only a process matching all three is reported
as the healer or signalled, and the signal goes through a pidfd, so it cannot reach a process that
took the pid in between. `refresh` notices a healer that is gone and the next `up` starts it again.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from iac.deploy.dynamic import changed

DAEMON = "iac.deploy.targets.docker.healer_daemon"
TOKEN_ENV = "MODELSTACK_HEALER_TOKEN"
STATE_FILE = "healer.json"


@dataclass(frozen=True)
class HealerProcess:
    """One healer process, as recorded when it was started."""

    pid: int
    owner: str
    start_time: int | None  # None only for healers recorded before start times were kept
    token: str | None

    def is_running(self) -> bool:
        """The pid is still this healer: same start time, a healer of this owner, same token."""
        if self.start_time is not None and process_start_time(self.pid) != self.start_time:
            return False
        args = cmdline(self.pid)
        if DAEMON not in args or _flag(args, "--owner") != self.owner:
            return False
        return self.token is None or _flag(args, "--token") == self.token

    def signal(self, sig: int) -> bool:
        """Send `sig` if the pid is still this healer; False when it is not (or is gone)."""
        try:
            fd = os.pidfd_open(self.pid)  # pins the process: a recycled pid cannot receive the signal
        except ProcessLookupError:
            return False
        except (AttributeError, OSError):
            fd = None  # no pidfds here: fall back to checking right before kill()
        try:
            if not self.is_running():
                return False
            if fd is not None:
                signal.pidfd_send_signal(fd, sig)
            else:
                os.kill(self.pid, sig)
            return True
        except ProcessLookupError:
            return False
        finally:
            if fd is not None:
                os.close(fd)

    def stop(self, timeout_s: float = 2.5) -> None:
        if not self.signal(signal.SIGTERM):
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.is_running():
                return
            time.sleep(0.05)
        self.signal(signal.SIGKILL)


def process_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks after boot."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) is in parentheses and may hold spaces: split after its last ')'.
    return int(stat[stat.rindex(")") + 2 :].split()[19])


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")[:-1]


def _flag(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args[:-1] else None


class HealerProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        healer = _start(props)
        return CreateResult(id_=str(healer.pid), outs={**props, **_outs(healer)})

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(
            changes=bool(changed(olds, news, ("owner", "config_dir", "python"))),
            replaces=[],
            delete_before_replace=False,
        )

    def update(self, id_: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        recorded(id_, olds).stop()
        return UpdateResult(outs={**news, **_outs(_start(news))})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props) if recorded(id_, props).is_running() else ReadResult(None, {})

    def delete(self, id_: str, props: dict[str, Any]) -> None:
        recorded(id_, props).stop()
        _stop_all(props["owner"], Path(props["config_dir"]))


def recorded(id_: str, props: dict[str, Any]) -> HealerProcess:
    """The healer a resource's state names (numbers come back from Pulumi state as floats)."""
    start_time = props.get("start_time")
    return HealerProcess(
        pid=int(props.get("pid") or id_),
        owner=props["owner"],
        start_time=None if start_time is None else int(start_time),
        token=props.get("token"),
    )


def _outs(healer: HealerProcess) -> dict[str, Any]:
    return {"pid": healer.pid, "start_time": healer.start_time, "token": healer.token}


def _start(props: dict[str, Any]) -> HealerProcess:
    config_dir = Path(props["config_dir"])
    _stop_all(props["owner"], config_dir)  # one healer per stack, even after an interrupted run
    config_dir.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    with open(config_dir / "healer.log", "ab") as log:
        process = subprocess.Popen(
            [
                props["python"],
                "-m",
                DAEMON,
                "--owner",
                props["owner"],
                "--config-dir",
                str(config_dir),
                "--token",
                token,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            env={**os.environ, TOKEN_ENV: token},
        )
    # Our unreaped child: its pid cannot be reused before this read.
    healer = HealerProcess(process.pid, props["owner"], process_start_time(process.pid), token)
    time.sleep(0.3)
    if process.poll() is not None:
        raise RuntimeError(f"the healer exited at once ({process.returncode}); see {config_dir / 'healer.log'}")
    state = config_dir / STATE_FILE
    staging = config_dir / f".{STATE_FILE}.{os.getpid()}"
    staging.write_text(json.dumps(asdict(healer)) + "\n")
    os.replace(staging, state)
    return healer


def state_file_healer(config_dir: Path) -> HealerProcess | None:
    """The healer `healer.json` records, if that file is there."""
    try:
        return HealerProcess(**json.loads((config_dir / STATE_FILE).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def running_healers(owner: str) -> list[HealerProcess]:
    """Every healer of `owner` running now (normally one; more only after an interrupted run),
    each as the kernel shows it at this moment."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        args = cmdline(int(entry.name))
        if DAEMON in args and _flag(args, "--owner") == owner:
            found.append(
                HealerProcess(int(entry.name), owner, process_start_time(int(entry.name)), _flag(args, "--token"))
            )
    return [healer for healer in found if healer.is_running()]


def healer_pids(owner: str) -> list[int]:
    return [healer.pid for healer in running_healers(owner)]


def _stop_all(owner: str, config_dir: Path) -> None:
    recorded_healer = state_file_healer(config_dir)
    if recorded_healer is not None and recorded_healer.owner == owner:  # another stack's healer is not ours to stop
        recorded_healer.stop()
    for healer in running_healers(owner):
        healer.stop()


class Healer(Resource, module="modelstack", name="Healer"):
    pid: pulumi.Output[int]

    def __init__(
        self,
        name: str,
        *,
        owner: pulumi.Input[str],
        config_dir: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        props = {
            "owner": owner,
            "config_dir": config_dir,
            "python": sys.executable,
            "pid": None,
            "start_time": None,
            "token": None,
        }
        super().__init__(HealerProvider(), name, props, opts)

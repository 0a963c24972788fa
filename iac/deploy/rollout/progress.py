"""Rollout progress in `pulumi up`: the lines a canary or shadow rollout writes to `rollout.log`.

The rollout runs in the dynamic provider, which has no channel to the CLI (Pulumi's dynamic providers
are not connected to the engine's log); the program is, and it is alive while the provider works. So
a thread of the program follows the file and logs each new line as the stack's info (shown as `up`
goes, and listed again at its end) until the resource that rolls is done
(the Docker target's Replicas, the Kubernetes target's Rollout).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pulumi

from iac.deploy.rollout.steps import PROGRESS_FILE


def follow(config_dir: pulumi.Input[str], done: pulumi.Output[object]) -> None:
    """Relay new lines of `config_dir/rollout.log` until `done` resolves (not at preview: nothing rolls).
    The Docker target's folder is an output, known once its network is (before the replicas roll)."""
    if pulumi.runtime.is_dry_run():
        return
    pulumi.Output.from_input(config_dir).apply(lambda folder: _start(Path(folder) / PROGRESS_FILE, done))


def _start(path: Path, done: pulumi.Output[object]) -> None:
    start = path.stat().st_size if path.is_file() else 0
    finished = threading.Event()
    done.apply(lambda _: finished.set())
    threading.Thread(target=_relay, args=(path, start, finished), name="rollout-progress", daemon=True).start()


def _relay(path: Path, offset: int, finished: threading.Event) -> None:
    while True:
        last = finished.wait(1.0)
        try:
            size = path.stat().st_size
        except OSError:
            size = 0
        if size < offset:
            offset = 0  # a new rollout started the file again
        if size > offset:
            with path.open("rb") as log:
                log.seek(offset)
                chunk = log.read(size - offset)
            offset = size
            for line in chunk.decode(errors="replace").splitlines():
                pulumi.log.info(line.split(" ", 1)[-1])
        if last:
            return

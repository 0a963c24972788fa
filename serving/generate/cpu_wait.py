"""How llama.cpp's CPU threads wait for each other (`serving.cpu_wait`), set before the runtime loads.

ggml's threads meet at a barrier after every graph node (~1,000 a decode step) through OpenMP. libgomp's
default spins there for a while before sleeping: on cores the replica has to itself that is what makes
llama-server fast (ours with it: 0.91x llama-server's tokens/s, and a single stream twice as fast as
with sleeping, docs/llm.md). On cores shared with other busy processes a spinning thread burns the time
slice its parked peer needs: generation fell 10-20x at load 7-9 on 2 cores. So `auto` spins only when
the replica may use more CPUs than its threads (the event loop and the front end then have a core too),
counting the CPUs it is pinned to and its cgroup's CPU quota (a Kubernetes CPU limit, `docker --cpus`).

libgomp reads OMP_WAIT_POLICY when llama.cpp's library loads, so this runs before the import; a policy
already in the environment (a user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT) is left as it is.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # cgroup v2: "<quota> <period>" or "max <period>"


def usable_cpus(cpu_max: Path = CPU_MAX) -> float:
    """CPUs this process may run on at once: those it is pinned to, capped by its cgroup's quota."""
    cpus = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = cpu_max.read_text().split()[:2]
    except (OSError, ValueError):
        return cpus  # cgroup v1 or no cgroup file: the affinity alone
    if quota != "max" and float(period) > 0:
        cpus = min(cpus, float(quota) / float(period))
    return cpus


def resolve(cpu_wait: str, threads: int, cpus: float | None = None) -> str:
    """'spin' or 'sleep' for the setting and the replica's threads."""
    if cpu_wait != "auto":
        return cpu_wait
    room = usable_cpus() if cpus is None else cpus
    return "spin" if math.floor(room) > threads else "sleep"


def apply(cpu_wait: str, threads: int) -> str:
    """Set libgomp's wait policy for `cpu_wait` unless the environment already chose one; say which."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return "environment"
    how = resolve(cpu_wait, threads)
    if how == "sleep":
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return how  # spin: libgomp's own default (spin a while, then sleep), as llama-server runs

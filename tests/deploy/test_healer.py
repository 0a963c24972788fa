"""The healer: who it is (pid, start time, token — a recycled pid is never taken for it) and what it
does with Docker's events, against a fake docker client. No Docker, no Pulumi engine."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_docker import FakeDocker

from iac.deploy.dynamic import OWNER_LABEL
from iac.deploy.targets.docker import healer_daemon
from iac.deploy.targets.docker.healer import (
    DAEMON,
    HealerProcess,
    healer_pids,
    process_start_time,
    recorded,
    state_file_healer,
)

OWNER = "digits/t-identity/digits"


def spawn(*args: str) -> subprocess.Popen[bytes]:
    """A sleeping process whose command line is `args` (what the identity checks read)."""
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", *args])


@pytest.fixture
def fake_healer() -> Iterator[subprocess.Popen[bytes]]:
    process = spawn(DAEMON, "--owner", OWNER, "--config-dir", "/nowhere", "--token", "tok-1")
    time.sleep(0.05)
    yield process
    process.kill()
    process.wait()


def test_a_healer_is_its_pid_its_start_time_and_its_token(fake_healer: subprocess.Popen[bytes]) -> None:
    me = HealerProcess(fake_healer.pid, OWNER, process_start_time(fake_healer.pid), "tok-1")
    assert me.is_running()
    assert healer_pids(OWNER) == [fake_healer.pid]
    assert healer_pids("digits/other/digits") == []


def test_a_recycled_pid_is_not_the_healer_and_is_never_signalled(fake_healer: subprocess.Popen[bytes]) -> None:
    start = process_start_time(fake_healer.pid)
    assert start is not None
    # What the state says about a healer that is long gone, its pid now taken by this process:
    for stale in (
        HealerProcess(fake_healer.pid, OWNER, start - 1, "tok-1"),  # another process's start time
        HealerProcess(fake_healer.pid, OWNER, start, "tok-0"),  # another healer's token
        HealerProcess(fake_healer.pid, "digits/other/digits", start, "tok-1"),
    ):  # another stack's
        assert not stale.is_running()
        assert stale.signal(signal.SIGTERM) is False
        stale.stop()
    time.sleep(0.1)
    assert fake_healer.poll() is None, "the process that took the pid is still running"


def test_an_unrelated_process_is_not_the_healer_even_with_the_recorded_pid_and_start_time() -> None:
    other = spawn("--owner", OWNER, "--token", "tok-1")  # not the healer module
    try:
        impostor = HealerProcess(other.pid, OWNER, process_start_time(other.pid), "tok-1")
        assert not impostor.is_running()
        impostor.stop()
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_stop_ends_the_healer_it_names(fake_healer: subprocess.Popen[bytes]) -> None:
    me = HealerProcess(fake_healer.pid, OWNER, process_start_time(fake_healer.pid), "tok-1")
    me.stop()
    assert fake_healer.wait(timeout=5) == -signal.SIGTERM
    assert not me.is_running() and me.signal(signal.SIGTERM) is False


def test_state_from_pulumi_and_the_state_file(tmp_path: Path, fake_healer: subprocess.Popen[bytes]) -> None:
    start = process_start_time(fake_healer.pid)
    # Pulumi state gives numbers back as floats; the resource id may be an older pid.
    props = {"owner": OWNER, "pid": float(fake_healer.pid), "start_time": float(start), "token": "tok-1"}
    assert recorded("1", props) == HealerProcess(fake_healer.pid, OWNER, start, "tok-1")
    assert recorded("1", props).is_running()
    # State written before start times and tokens were kept: the command line is all there is.
    assert recorded(str(fake_healer.pid), {"owner": OWNER, "pid": None}).is_running()

    (tmp_path / "healer.json").write_text(
        f'{{"pid": {fake_healer.pid}, "owner": "{OWNER}", "start_time": {start}, "token": "tok-1"}}'
    )
    assert state_file_healer(tmp_path) == HealerProcess(fake_healer.pid, OWNER, start, "tok-1")
    assert state_file_healer(tmp_path / "missing") is None


# -- reacting to events ----------------------------------------------------------------------------


@pytest.fixture
def stack(fake_docker: FakeDocker, tmp_path: Path) -> dict[str, Any]:
    """A running proxy and two replicas of OWNER, the proxy routing to replica 0 and 1; plus an
    old replica a rollout retired (stopped, not routed)."""
    labels = {OWNER_LABEL: OWNER}
    fake_docker.networks.create("net")
    run = fake_docker.containers.run
    proxy = run("proxy-image", name="p", network="net", labels={**labels, "org.modelstack.role": "proxy"})
    models = [
        run("img", name=f"r-v2-{i}", network="net", labels={**labels, "org.modelstack.role": "model"}) for i in (0, 1)
    ]
    retired = run("img", name="r-v1-0", network="net", labels={**labels, "org.modelstack.role": "model"})
    retired.stop()
    (tmp_path / "upstream.conf").write_text(
        "server r-v2-0:8501 max_fails=1 fail_timeout=2s;\nserver r-v2-1:8501 max_fails=1 fail_timeout=2s;\n"
    )
    fake_docker.events_log.clear()
    return {"proxy": proxy, "models": models, "retired": retired, "config_dir": tmp_path}


def test_a_killed_routed_replica_is_started_and_nginx_reloaded(fake_docker: FakeDocker, stack: dict[str, Any]) -> None:
    victim = stack["models"][0]
    victim.kill()
    (event,) = fake_docker.events_log
    assert healer_daemon.on_event(fake_docker, OWNER, stack["config_dir"], event) == ["r-v2-0"]
    assert victim.status == "running"
    assert stack["proxy"].execs == [["nginx", "-c", "/etc/modelstack/nginx.conf", "-s", "reload"]]
    # The same event again (a reconnected stream may repeat it): nothing to do.
    assert healer_daemon.on_event(fake_docker, OWNER, stack["config_dir"], event) == []


def test_a_killed_proxy_is_started_a_retired_or_removed_replica_is_not(
    fake_docker: FakeDocker, stack: dict[str, Any]
) -> None:
    stack["proxy"].kill()
    stack["retired"].start()
    stack["retired"].stop()
    stack["models"][1].stop()
    stack["models"][1].remove()
    proxy_died, retired_died, removed_died = fake_docker.events_log
    config_dir = stack["config_dir"]
    assert healer_daemon.on_event(fake_docker, OWNER, config_dir, proxy_died) == ["p"]
    assert stack["proxy"].execs == []
    assert healer_daemon.on_event(fake_docker, OWNER, config_dir, retired_died) == []
    assert healer_daemon.on_event(fake_docker, OWNER, config_dir, removed_died) == []
    assert stack["retired"].status == "exited"


def test_the_stream_filters_on_die_and_oom_of_the_stack(fake_docker: FakeDocker, stack: dict[str, Any]) -> None:
    assert healer_daemon.event_filters(OWNER) == {
        "type": "container",
        "event": ["die", "oom"],
        "label": f"{OWNER_LABEL}={OWNER}",
    }
    other = fake_docker.containers.run("img", name="x", network="net", labels={OWNER_LABEL: "other/dev/x"})
    other.kill()
    assert list(fake_docker.events(decode=True, filters=healer_daemon.event_filters(OWNER))) == []


def test_watch_reconciles_on_every_connection_and_reconnects_a_dropped_stream(
    fake_docker: FakeDocker,
    stack: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stop = threading.Event()
    connections = []
    events = fake_docker.events

    def events_then_drop(**kwargs: Any) -> Iterator[dict[str, Any]]:
        connections.append(kwargs)
        if len(connections) == 2:
            stop.set()  # the second connection is the last one of this test
        # Died while no stream was connected: only the full reconcile can see these.
        stack["models"][1].kill()
        return events(**kwargs)

    monkeypatch.setattr(fake_docker, "events", events_then_drop)
    monkeypatch.setattr(healer_daemon, "RECONNECT_S", 0.0)
    logged: list[tuple[str, dict]] = []
    monkeypatch.setattr(healer_daemon, "log", lambda event, **fields: logged.append((event, fields)))
    healer_daemon.watch(fake_docker, OWNER, stack["config_dir"], stop)
    assert len(connections) == 2
    assert all(c["decode"] is True and c["filters"]["event"] == ["die", "oom"] for c in connections)
    assert ("restarted", {"container": "r-v2-1", "reason": "reconcile"}) in logged
    assert ("stream-ended", {}) in logged
    assert stack["models"][1].status == "running" and stack["retired"].status == "exited"

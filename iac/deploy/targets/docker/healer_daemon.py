"""The healer process: restarts a stack's containers that died (killed, crashed, out of memory).

Docker's restart policy covers crashes but not `docker kill` (a kill counts as a manual stop),
so one small host process per stack follows Docker's event stream (`die` and `oom` of containers
carrying the stack's owner label) and starts again:
  - the proxy, always;
  - a model replica, when the proxy's upstream.conf lists it (a replica a rollout retired is
    not listed, so it stays down), then reloads the proxy so nginx resolves its new address.

Each time the stream is (re)connected it first reconciles in full — every exited container of the
stack — so nothing that died while the stream was down is missed; a stream that ends (the engine
restarted, the connection dropped) is reconnected after a second.

    python -m iac.deploy.targets.docker.healer_daemon --owner digits/dev/digits --config-dir DIR --token T

The token only names this process (see `healer.py`); the daemon does not read it.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

EVENTS = ("die", "oom")
RECONNECT_S = 1.0
ROLE = "org.modelstack.role"


def listed_replicas(config_dir: Path) -> set[str]:
    try:
        text = (config_dir / "upstream.conf").read_text()
    except OSError:
        return set()
    return {
        line.split()[1].rsplit(":", 1)[0]
        for line in text.splitlines()
        if line.startswith("server ") and " down;" not in line
    }


def event_filters(owner: str) -> dict[str, Any]:
    from iac.deploy.dynamic import OWNER_LABEL

    return {"type": "container", "event": list(EVENTS), "label": f"{OWNER_LABEL}={owner}"}


def should_run(container: Any, config_dir: Path) -> bool:
    role = container.labels.get(ROLE)
    return role == "proxy" or (role == "model" and container.name in listed_replicas(config_dir))


def heal_once(client: Any, owner: str, config_dir: Path) -> list[str]:
    """Start every exited container of `owner` that should run; returns their names."""
    from iac.deploy.dynamic import OWNER_LABEL

    dead = client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}", "status": "exited"})
    return _restart(client, owner, [c for c in dead if should_run(c, config_dir)])


def on_event(client: Any, owner: str, config_dir: Path, event: dict[str, Any]) -> list[str]:
    """Start the container a `die`/`oom` event is about, if it should run and is not running."""
    import docker.errors

    try:
        container = client.containers.get(event["Actor"]["ID"])
    except docker.errors.NotFound:
        return []  # removed (a rollout's retired replica, `destroy`): nothing to heal
    if container.status != "exited" or not should_run(container, config_dir):
        return []  # still up, or restarting by Docker's own policy, or not wanted
    return _restart(client, owner, [container])


def _restart(client: Any, owner: str, containers: list[Any]) -> list[str]:
    import docker.errors

    healed = []
    for container in containers:
        try:
            container.start()
        except docker.errors.NotFound:
            continue  # removed meanwhile
        healed.append(container.name)
    if any(c.labels.get(ROLE) == "model" for c in containers if c.name in healed):
        _reload_proxy(client, owner)
    return healed


def _reload_proxy(client: Any, owner: str) -> None:
    from iac.deploy.dynamic import OWNER_LABEL
    from iac.deploy.targets.docker.proxy import reload

    for proxy in client.containers.list(filters={"label": [f"{OWNER_LABEL}={owner}", f"{ROLE}=proxy"]}):
        try:
            reload(proxy.name)
        except RuntimeError:
            pass  # nginx kept its old config; the next restart or rollout reloads it again


def watch(client: Any, owner: str, config_dir: Path, stop: threading.Event) -> None:
    """Follow the event stream until `stop` is set; reconcile in full on every (re)connection."""
    while not stop.is_set():
        try:
            stream = client.events(decode=True, filters=event_filters(owner))  # subscribe first: no gap
            for name in heal_once(client, owner, config_dir):
                log("restarted", container=name, reason="reconcile")
            for event in stream:
                for name in on_event(client, owner, config_dir, event):
                    log("restarted", container=name, reason=event.get("Action") or event.get("status"))
                if stop.is_set():
                    return
            log("stream-ended")
        except Exception as exc:  # docker hiccups must not end the healer
            log("error", error=f"{type(exc).__name__}: {exc}")
        stop.wait(RECONNECT_S)


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {__spec__.name if __spec__ else 'healer_daemon'}")
    parser.add_argument("--owner", required=True)
    parser.add_argument("--config-dir", required=True, type=Path)
    parser.add_argument("--token", default="", help="names this process for `healer.py`; unused here")
    args = parser.parse_args(argv)
    from iac.deploy.dynamic import docker_client

    def _stop(*_: Any) -> None:
        raise SystemExit(0)  # also ends a read blocked on the event stream

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    log("started", owner=args.owner)
    try:
        watch(docker_client(), args.owner, args.config_dir, threading.Event())
    finally:
        log("stopped", owner=args.owner)
    return 0


if __name__ == "__main__":
    sys.exit(main())

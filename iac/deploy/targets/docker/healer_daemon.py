"""The healer: restarts a stack's containers that died (killed, crashed, out of memory).

Docker's restart policy covers crashes but not `docker kill` (a kill counts as a manual stop),
so one small host process per stack watches the stack's containers and starts again:
  - the proxy, always;
  - a model replica, when the proxy's upstream.conf lists it (a replica a rollout retired is
    not listed, so it stays down), then reloads the proxy so nginx resolves its new address.

    python -m iac.deploy.targets.docker.healer_daemon --owner digits/dev/digits --config-dir DIR
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

POLL_S = 1.0


def listed_replicas(config_dir: Path) -> set[str]:
    try:
        text = (config_dir / "upstream.conf").read_text()
    except OSError:
        return set()
    return {line.split()[1].rsplit(":", 1)[0] for line in text.splitlines() if line.startswith("server ") and " down;" not in line}


def heal_once(client: Any, owner: str, config_dir: Path) -> list[str]:
    """Start every dead container of `owner` that should run; returns their names."""
    from iac.deploy.dynamic import OWNER_LABEL

    wanted = listed_replicas(config_dir)
    healed = []
    for container in client.containers.list(all=True, filters={"label": f"{OWNER_LABEL}={owner}", "status": "exited"}):
        role = container.labels.get("org.modelstack.role")
        if role == "proxy" or (role == "model" and container.name in wanted):
            container.start()
            healed.append(container.name)
    if any(name in wanted for name in healed):
        _reload_proxy(client, owner)
    return healed


def _reload_proxy(client: Any, owner: str) -> None:
    from iac.deploy.dynamic import OWNER_LABEL
    from iac.deploy.targets.docker.proxy import reload

    time.sleep(0.5)  # let the restarted replica's address be registered in docker's DNS
    for proxy in client.containers.list(filters={"label": [f"{OWNER_LABEL}={owner}", "org.modelstack.role=proxy"]}):
        try:
            reload(proxy.name)
        except RuntimeError:
            pass  # nginx kept its old config; the next restart or rollout reloads it again


def log(event: str, **fields: Any) -> None:
    print(json.dumps({"ts": round(time.time(), 3), "event": event, **fields}), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m iac.deploy.targets.docker.healer_daemon")
    parser.add_argument("--owner", required=True)
    parser.add_argument("--config-dir", required=True, type=Path)
    args = parser.parse_args(argv)
    import docker

    stop = False

    def _stop(*_: Any) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    client = docker.from_env()
    log("started", owner=args.owner)
    while not stop:
        try:
            for name in heal_once(client, args.owner, args.config_dir):
                log("restarted", container=name)
        except Exception as exc:  # docker hiccups must not end the healer
            log("error", error=f"{type(exc).__name__}: {exc}")
        time.sleep(POLL_S)
    log("stopped", owner=args.owner)
    return 0


if __name__ == "__main__":
    sys.exit(main())

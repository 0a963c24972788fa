"""Canary and shadow rollouts on the Docker target, judged step by step inside `pulumi up`.

The new version's replicas are up and ready beside the old ones (as in a rolling update). Then, per
step of `deploy.rollout.steps`: the proxy sends `weight`% of live requests to the new version (canary,
a request-weight split) or copies `weight`% to it and discards its answers (shadow); after the step's
hold the window is judged (`analysis.judge`): error rate and p99 from both versions' `/metrics`,
prediction agreement on the window's live requests replayed to both. A pass moves on; a failure, or an
inconclusive window the spec does not hold, sends 100% back to the old version at once and the caller
removes the new one. Every window's line goes to `rollout.log` in the stack's config directory (what
`up` shows as it goes) and into the record kept as the stack output `last_rollout`.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from iac.build.proxy_config import mirror_conf, split_conf, upstream_conf
from iac.deploy.dynamic import docker_client
from iac.deploy.targets.docker.analysis import (
    Counters,
    Thresholds,
    Verdict,
    Window,
    judge,
    parse_metrics,
)
from iac.deploy.targets.docker.proxy import reload, write_config
from iac.deploy.targets.docker.replay import clear, replay, take

PROGRESS_FILE = "rollout.log"
REPLAY_LIMIT = 400  # live requests replayed per window at most: enough to judge, bounded in time


def judged_rollout(props: dict[str, Any], stable: list[str], candidate: list[str]) -> dict[str, Any]:
    """Run the steps; returns the record (`outcome`: promoted, rolled back or inconclusive). On anything
    but promoted the proxy already sends everything to the old version again."""
    plan = props["rollout"]
    strategy = plan["strategy"]
    network, port = props["network_name"], int(props["settings"]["port"])
    addresses = {name: _address(name, network) for name in [*stable, *candidate]}
    limits = Thresholds.of(plan["analysis"], props.get("metric", "accuracy"), _stable_figure(props, stable, addresses))
    record: dict[str, Any] = {
        "strategy": strategy,
        "version": props["version"],
        "started": _now(),
        "steps": [],
        "thresholds": asdict(limits),
    }
    write_config(props["config_dir"], "upstream-candidate.conf", upstream_conf(candidate, port), keep_existing=False)
    progress = _progress(props["config_dir"], f"{strategy} rollout of version {props['version']}")
    proxy = docker_client().containers.get(props["proxy_name"])
    try:
        for number, step in enumerate(plan["steps"], start=1):
            weight = int(step["weight"])
            label = (
                f"step {number}/{len(plan['steps'])} ({weight}% {'copied' if strategy == 'shadow' else 'of requests'})"
            )
            holds = 0
            _route(props, strategy, weight)
            while True:
                verdict = _window(
                    props,
                    proxy,
                    strategy,
                    weight,
                    float(step["hold"]),
                    stable,
                    candidate,
                    addresses,
                    limits,
                    label,
                    progress,
                )
                record["steps"].append(
                    {"step": number, "weight": weight, "outcome": verdict.outcome, **verdict.figures}
                )
                if verdict.outcome == "pass":
                    break
                if (
                    verdict.outcome == "inconclusive"
                    and plan["analysis"]["inconclusive"] == "hold"
                    and holds < int(plan["analysis"]["max_holds"])
                ):
                    holds += 1
                    progress(
                        f"{label}: inconclusive, held for another window ({holds}/{plan['analysis']['max_holds']})"
                    )
                    continue
                _back_to_stable(props)
                line = f"{strategy} rollout of version {props['version']} rolled back at {verdict.line(label)}"
                progress(line)
                return {
                    **record,
                    "outcome": "rolled back" if verdict.outcome == "fail" else "inconclusive",
                    "reason": line,
                    "metric": verdict.metric,
                    "candidate": verdict.candidate,
                    "stable": verdict.stable,
                    "threshold": verdict.threshold,
                    "samples": verdict.samples,
                    "finished": _now(),
                }
    except BaseException:
        _back_to_stable(props)  # interrupted or broken: the old version answers everything again
        raise
    progress(f"{strategy} rollout of version {props['version']}: every step passed; promoting")
    return {**record, "outcome": "promoted", "reason": "", "finished": _now()}


def _window(
    props: dict[str, Any],
    proxy: Any,
    strategy: str,
    weight: int,
    hold: float,
    stable: list[str],
    candidate: list[str],
    addresses: dict[str, str | None],
    limits: Thresholds,
    label: str,
    progress: Any,
) -> Verdict:
    port = int(props["settings"]["port"])
    clear(proxy)
    before = _scrape(stable, addresses, port, props), _scrape(candidate, addresses, port, props)
    deadline, failing = time.monotonic() + hold, False
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 2.0))
        now = _scrape(candidate, addresses, port, props).since(before[1])
        progress(
            f"{label}: {hold - max(0.0, deadline - time.monotonic()):.0f}/{hold:.0f} s, "
            f"{now.requests} requests to the new version, {now.errors} errors"
        )
        if now.errors >= 5 and now.error_rate > limits.max_error_rate_increase:
            failing = True  # failing clients now: judge at once, without waiting out the hold or replaying
            break
    after = _scrape(stable, addresses, port, props), _scrape(candidate, addresses, port, props)
    entries = [] if failing else take(proxy, REPLAY_LIMIT)
    agreement, failures = replay(
        entries,
        [addresses[n] or n for n in stable],
        [addresses[n] or n for n in candidate],
        port,
        limits.kind,
        props.get("api_key") or None,
    )
    verdict = judge(Window(after[0].since(before[0]), after[1].since(before[1]), agreement, failures), limits)
    progress(verdict.line(label) + f" [{json.dumps(verdict.figures)}]")
    return verdict


def _route(props: dict[str, Any], strategy: str, weight: int) -> None:
    """`weight`% of requests to the new version (canary) or copied to it (shadow); bodies logged for replay."""
    canary = strategy == "canary"
    write_config(
        props["config_dir"],
        "split.conf",
        split_conf(weight=weight if canary else 0, shadow=0 if canary else weight, replay=True),
        keep_existing=False,
    )
    write_config(props["config_dir"], "mirror.conf", mirror_conf(not canary), keep_existing=False)
    reload(props["proxy_name"])


def _back_to_stable(props: dict[str, Any]) -> None:
    """100% to the old version, nothing copied or logged; one reload."""
    write_config(props["config_dir"], "split.conf", split_conf(), keep_existing=False)
    write_config(props["config_dir"], "mirror.conf", mirror_conf(False), keep_existing=False)
    reload(props["proxy_name"])
    write_config(
        props["config_dir"],
        "upstream-candidate.conf",
        props.get("parked_upstream") or upstream_conf([], 0),
        keep_existing=False,
    )


def _scrape(names: list[str], addresses: dict[str, str | None], port: int, props: dict[str, Any]) -> Counters:
    total = Counters()
    headers = {"Authorization": f"Bearer {props['api_key']}"} if props.get("api_key") else {}
    for name in names:
        try:
            request = urllib.request.Request(f"http://{addresses[name] or name}:{port}/metrics", headers=headers)
            with urllib.request.urlopen(request, timeout=2) as response:
                total = total + parse_metrics(response.read().decode())
        except OSError:
            continue  # a replica that does not answer its metrics: its requests fail and show as errors
    return total


def _stable_figure(props: dict[str, Any], stable: list[str], addresses: dict[str, str | None]) -> float:
    """The old version's prep figure (accuracy, cosine or MAE) as it says in its metadata; the new one's if not."""
    for name in stable:
        url = f"http://{addresses[name] or name}:{int(props['settings']['port'])}/v1/models/{props['model_name']}/metadata"
        headers = {"Authorization": f"Bearer {props['api_key']}"} if props.get("api_key") else {}
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=2) as response:
                return float(json.loads(response.read())["metadata"]["modelstack"]["accuracy"])
        except (OSError, KeyError, ValueError, TypeError):
            continue
    return float(props.get("figure") or 0.0)


def _address(name: str, network: str) -> str | None:
    from iac.deploy.targets.docker.settings import replica_address

    container = docker_client().containers.get(name)
    return replica_address(container, network)


def _progress(config_dir: str, title: str) -> Any:
    path = Path(config_dir) / PROGRESS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as log:  # appended: the program relays what comes after its start (progress.py)
        log.write(f"{_now()} {title}\n")

    def say(line: str) -> None:
        with path.open("a") as log:
            log.write(f"{_now()} {line}\n")

    return say


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

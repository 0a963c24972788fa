"""Canary and shadow rollouts on the Docker target, judged step by step inside `pulumi up`.

The new version's replicas are up and ready beside the old ones (as in a rolling update). Then, per
step of `deploy.rollout.steps`: the proxy sends `weight`% of live requests to the new version (canary,
a request-weight split) or copies `weight`% to it and discards its answers (shadow); after the step's
hold the window is judged (`analysis.judge`): error rate and p99 from both versions' `/metrics`,
prediction agreement on the window's live requests replayed to both. A pass moves on; a failure, or an
inconclusive window the spec does not hold, sends 100% back to the old version at once and the caller
removes the new one. The steps themselves are `iac.deploy.rollout.steps` (both targets run them); this
module is how they route and read on one Docker host. Every window's line goes to `rollout.log` in the
stack's config directory (what `up` shows as it goes) and into the record kept as `last_rollout`.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Any

from iac.build.proxy_config import mirror_conf, split_conf, upstream_conf
from iac.deploy.dynamic import docker_client
from iac.deploy.rollout.analysis import Agreement, AgreementKind, Counters, parse_metrics
from iac.deploy.rollout.replay import clear, replay, take
from iac.deploy.rollout.steps import PROGRESS_FILE, REPLAY_LIMIT
from iac.deploy.rollout.steps import judged_rollout as run_steps
from iac.deploy.targets.docker.proxy import reload, write_config

__all__ = ["PROGRESS_FILE", "REPLAY_LIMIT", "judged_rollout"]


def judged_rollout(props: dict[str, Any], stable: list[str], candidate: list[str]) -> dict[str, Any]:
    """Run the steps; returns the record (`outcome`: promoted, rolled back or inconclusive). On anything
    but promoted the proxy already sends everything to the old version again."""
    network, port = props["network_name"], int(props["settings"]["port"])
    addresses = {name: _address(name, network) for name in [*stable, *candidate]}
    write_config(props["config_dir"], "upstream-candidate.conf", upstream_conf(candidate, port), keep_existing=False)
    versions = _DockerVersions(props, stable, candidate, addresses)
    return run_steps(
        props["rollout"],
        props["version"],
        props.get("metric", "accuracy"),
        _stable_figure(props, stable, addresses),
        props["config_dir"],
        versions,
    )


class _DockerVersions:
    """`steps.Versions` on one Docker host: the proxy container's config files and reloads, the
    replicas' `/metrics` at their addresses on the stack's network."""

    def __init__(
        self, props: dict[str, Any], stable: list[str], candidate: list[str], addresses: dict[str, str | None]
    ) -> None:
        self.props, self.stable, self.candidate, self.addresses = props, stable, candidate, addresses
        self.proxy = docker_client().containers.get(props["proxy_name"])

    def route(self, strategy: str, weight: int) -> None:
        _route(self.props, strategy, weight)

    def back_to_stable(self) -> None:
        _back_to_stable(self.props)

    def scrape(self, candidate: bool) -> Counters:
        port = int(self.props["settings"]["port"])
        return _scrape(self.candidate if candidate else self.stable, self.addresses, port, self.props)

    def clear_log(self) -> None:
        clear(self.proxy)

    def take_log(self, limit: int) -> list[dict[str, str]]:
        return take(self.proxy, limit)

    def replay(self, entries: list[dict[str, str]], kind: AgreementKind) -> tuple[Agreement, int]:
        return replay(
            entries,
            [self.addresses[n] or n for n in self.stable],
            [self.addresses[n] or n for n in self.candidate],
            int(self.props["settings"]["port"]),
            kind,
            self.props.get("api_key") or None,
        )


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

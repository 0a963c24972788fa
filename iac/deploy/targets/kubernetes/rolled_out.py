"""`RolledOut`: `pulumi up` ends only when the Deployment's new pods serve, read as `kubectl rollout status`
reads it, from the Deployment's own status: its generation observed, every replica updated and available,
no old replica left. A progress deadline exceeded is kept as `problem` (what the new pods say), which the
program turns into `up`'s one-line error; a resource with a problem diffs as changed, so the next `up`
checks again.

Why not only pulumi-kubernetes' await: it can call an update complete before the controller has begun it.
Seen in CI here: "Deployment initialization complete" 0.45 s after an update whose pods could never start
(a 16 MiB limit), so `up` succeeded while no new pod was ever ready (the same shape as the provider's
StatefulSet issue #3329). A version that never gets ready must fail `up`; this check makes it so on any
provider version. It re-runs whenever the Deployment's generation changes (any pod template change).
"""

from __future__ import annotations

import time
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from iac.deploy.dynamic import changed
from iac.deploy.targets.kubernetes.access import Cluster

POLL_S = 1.0
INPUTS = ("name", "namespace", "generation")


class RolledOutProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        outs = {**props, "problem": wait_rolled_out(props)}
        return CreateResult(id_=f"{props['namespace']}/{props['name']}-rolled-out", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=bool(olds.get("problem") or changed(olds, news, INPUTS)), replaces=[])

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs={**news, "problem": wait_rolled_out(news)})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        return None


def wait_rolled_out(props: dict[str, Any]) -> str:
    """'' once the Deployment has rolled out; else what went wrong, as one line."""
    cluster = Cluster.of(props)
    name, deadline = props["name"], time.monotonic() + float(props["timeout_s"])
    while True:
        deployment = cluster.apps.read_namespaced_deployment(name, cluster.namespace, _request_timeout=10)
        state = rollout_state(deployment)
        if state == "done":
            return ""
        if state == "stuck" or time.monotonic() > deadline:
            return (
                f"deployment {cluster.namespace}/{name}: the new pods did not get ready within "
                f"{deployment.spec.progress_deadline_seconds} s; the old ones keep serving. "
                f"{pod_problems(cluster, deployment)}"
            )
        time.sleep(POLL_S)


def rollout_state(deployment: Any) -> str:
    """'done', 'waiting' or 'stuck' (the progress deadline passed), as `kubectl rollout status` decides."""
    status, wanted = deployment.status, deployment.spec.replicas
    if (status.observed_generation or 0) < (deployment.metadata.generation or 0):
        return "waiting"  # the controller has not acted on this template yet
    if any(c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" for c in status.conditions or []):
        return "stuck"
    updated = status.updated_replicas or 0
    if wanted is not None and updated < wanted:
        return "waiting"
    if (status.replicas or 0) > updated or (status.available_replicas or 0) < updated:
        return "waiting"  # old replicas still terminating, or new ones not yet available
    return "done"


def pod_problems(cluster: Cluster, deployment: Any) -> str:
    """What the Deployment's unready pods say: each container's waiting or last termination reason."""
    selector = ",".join(f"{k}={v}" for k, v in sorted((deployment.spec.selector.match_labels or {}).items()))
    pods = cluster.core.list_namespaced_pod(cluster.namespace, label_selector=selector, _request_timeout=10).items
    said = []
    for pod in pods:
        for c in pod.status.container_statuses or []:
            if c.ready:
                continue
            ended = c.last_state.terminated if c.last_state else None
            why = (c.state.waiting.reason if c.state and c.state.waiting else None) or "not ready"
            if ended is not None:
                why += f", last exit {ended.reason} ({ended.exit_code})"
            said.append(f"pod {pod.metadata.name} container {c.name}: {why}, {c.restart_count} restarts")
    return "; ".join(said[:4]) or "no pod reported a container problem (see `kubectl describe deployment`)"


def refuse_stuck(problem: str | None) -> None:
    """Fail `up` with the rollout's line (no traceback) when the new pods never got ready."""
    if problem:
        raise pulumi.RunError(problem)


class RolledOut(Resource, module="kubernetes", name="RolledOut"):
    problem: pulumi.Output[str]  # '' once rolled out; else why not

    def __init__(self, name: str, *, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(RolledOutProvider(), name, {**props, "problem": None}, opts)

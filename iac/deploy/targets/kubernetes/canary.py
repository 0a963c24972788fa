"""Canary and shadow rollouts on Kubernetes, judged step by step inside `pulumi up`, with no mesh.

`Rollout` decides which pod the stable Deployment runs (`stable_pod`, the pod template's spec, and its
`stable_image`; pulumi-kubernetes applies them): a rejected version's whole pod stays out of it, its
other settings (resources, say) as well as its image.
For a new image, while the stable pods keep serving, it creates the candidate Deployment
(`<name>-candidate`: the stable pod template with the new image, its own instance label, which only the
candidate Service selects) and waits until its pods are ready; then it runs the steps
(`iac.deploy.rollout.steps`) through the proxy (`proxy.py`): each step's routing written into every proxy
pod and nginx reloaded (exec), each version's `/metrics` and the replayed predictions read through the
API server's pod proxy.

- Rolled back (or inconclusive): everything back to the stable Service at once, the candidate
  Deployment deleted; the outputs keep the old pod (so the Deployment does not change and `refresh`
  finds what the state says) and the record (`last_rollout`); the program fails `up` with its line and
  the next `up` tries again.
- Promoted: the candidate takes 100% of requests (the proxy's main upstream); `stable_image` becomes the new image, so
  pulumi-kubernetes rolls the stable Deployment to it (nobody is sent there meanwhile); then `Settle`,
  which runs after the Deployment, sends everything back to the stable Service (now the new version)
  and deletes the candidate: old pods drain behind nginx's graceful reload and the pods' preStop delay.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from iac.build.proxy_config import upstream_conf
from iac.deploy.dynamic import changed
from iac.deploy.rollout.analysis import Agreement, AgreementKind, Counters, parse_metrics
from iac.deploy.rollout.replay import CLEAR_COMMAND, TAKE_COMMAND, entries_of, instances, replay
from iac.deploy.rollout.steps import judged_rollout
from iac.deploy.targets.kubernetes.access import Cluster
from iac.deploy.targets.kubernetes.proxy import CONFIG_DIR, CONTAINER, resting_files, step_files

DRAIN_S = 2.0  # old nginx workers finish their requests to the version they leave
# After a Service's EndpointSlices list a pod, each node's kube-proxy programs it (iptables mode: at most
# its 1 s minimum sync period, then the rules' apply): only then does the proxy send to that Service.
PROXY_SYNC_S = 3.0
POLL_S = 1.0
INPUTS = ("image_ref", "keys", "template", "plan", "metric", "names", "namespace", "kubeconfig", "context", "port")


def version_of(image_ref: str) -> str:
    """A version's short name in the record and the rollback line: its image digest's first 12 hex."""
    return image_ref.rpartition("@")[2].removeprefix("sha256:")[:12]


class RolloutProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        # Nothing serves yet: nothing to judge the image against; a candidate left by a lost state goes.
        _remove_candidate(Cluster.of(props), props)
        outs = {**props, **_accepted(props), "last_rollout": None}
        return CreateResult(id_=f"{props['namespace']}/{props['names']['stable']}", outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        # A state written before the stable pod was kept has none to give the Deployment: update it.
        changes = bool(changed(olds, news, INPUTS)) or not olds.get("stable_pod")
        return DiffResult(changes=changes, replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        base = {**news, "last_rollout": olds.get("last_rollout")}
        if news["image_ref"] == olds.get("stable_image"):
            return UpdateResult(outs={**base, **_accepted(news)})  # the pod's other settings roll as before
        cluster = Cluster.of(news)
        if not cluster.ready_pods(news["selectors"]["stable"]) or not cluster.ready_pods(news["selectors"]["proxy"]):
            # Nothing serves to judge against (the stable pods or the proxy are not up): a plain rollout.
            return UpdateResult(outs={**base, **_accepted(news)})
        record = _judge(cluster, news)
        if record["outcome"] != "promoted":
            # The state keeps the old pod, so the next `up` diffs the new one against it and tries again.
            return UpdateResult(outs={**olds, "stable_pod": _stable_pod(olds, news), "last_rollout": record})
        return UpdateResult(outs={**base, **_accepted(news), "last_rollout": record})

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        try:
            _remove_candidate(Cluster.of(props), props)
        except Exception:  # noqa: BLE001 - the cluster is gone: there is no candidate left either
            return


def _accepted(props: dict[str, Any]) -> dict[str, Any]:
    """The outputs that make `props`' version the stable one: its image, content keys and pod."""
    return {"stable_image": props["image_ref"], "stable_keys": props["keys"], "stable_pod": props["template"]["spec"]}


def _stable_pod(olds: dict[str, Any], news: dict[str, Any]) -> dict[str, Any]:
    """The pod the stable Deployment keeps after a rollback: the state's; a state from before it was kept
    has only the image, so the new template with the old image (what such a stack ran before)."""
    if olds.get("stable_pod"):
        return dict(olds["stable_pod"])
    pod = news["template"]["spec"]
    first, *rest = pod["containers"]
    return {**pod, "containers": [{**first, "image": olds.get("stable_image")}, *rest]}


class SettleProvider(ResourceProvider):
    """After the stable Deployment runs `stable_image`: everything to the stable Service, no candidate."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        _settle(props)
        return CreateResult(id_=f"{props['namespace']}/{props['names']['stable']}-settled", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        return DiffResult(changes=bool(changed(olds, news, ("stable_image",))), replaces=[])

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        _settle(news)
        return UpdateResult(outs=news)

    def read(self, id_: str, props: dict[str, Any]) -> ReadResult:
        return ReadResult(id_, props)

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        return None


def _settle(props: dict[str, Any]) -> None:
    cluster = Cluster.of(props)
    # The stable Deployment has just rolled (after a promotion): its new pods routed by the Service first.
    ready = len(cluster.ready_pods(props["selectors"]["stable"]))
    if ready and cluster.wait_endpoints(props["services"]["stable"], ready, 60):
        time.sleep(PROXY_SYNC_S)
    ClusterVersions(cluster, props).back_to_stable()  # idempotent: also undoes what an interrupted `up` left
    if _candidate_exists(cluster, props):
        time.sleep(DRAIN_S)  # old nginx workers finish their requests to the candidate
        _remove_candidate(cluster, props)


def _judge(cluster: Cluster, props: dict[str, Any]) -> dict[str, Any]:
    """Start the candidate, run the steps; on a pass 100% of requests go to it, otherwise it is removed."""
    _start_candidate(cluster, props)
    versions = ClusterVersions(cluster, props)
    try:
        record = judged_rollout(
            props["plan"],
            version_of(props["image_ref"]),
            props["metric"],
            versions.stable_figure(),
            props["log_dir"],
            versions,
        )
    except BaseException:
        _remove_candidate(cluster, props)
        raise
    if record["outcome"] == "promoted":
        versions.promote()  # the candidate answers everything while the stable pods catch up
    else:
        time.sleep(DRAIN_S)  # requests it took before the switch back finish
        _remove_candidate(cluster, props)
    return record


class ClusterVersions:
    """`steps.Versions` on a cluster: the proxy pods reconfigured by exec, the pods read through the API server."""

    def __init__(self, cluster: Cluster, props: dict[str, Any]) -> None:
        self.cluster, self.props = cluster, props
        self.port = int(props["port"])
        key = props.get("api_key")
        self.headers = {"X-API-Key": key} if key else {}

    # -- routing: every proxy pod, one exec each (write the files, then a graceful reload)

    def route(self, strategy: str, weight: int) -> None:
        self._configure(step_files(strategy, weight, self._ip("candidate"), self.port))

    def back_to_stable(self) -> None:
        self._configure({**resting_files(), "upstream.conf": upstream_conf([self._ip("stable")], self.port)})

    def promote(self) -> None:
        """The candidate is the serving version now: the proxy's main upstream is its Service (as on
        Docker, where the main upstream becomes the new replicas), until `Settle` hands it back."""
        self._configure({**resting_files(), "upstream.conf": upstream_conf([self._ip("candidate")], self.port)})

    def _ip(self, role: str) -> str:
        service = self.cluster.core.read_namespaced_service(self.props["services"][role], self.cluster.namespace)
        return str(service.spec.cluster_ip)

    def _configure(self, files: dict[str, str]) -> None:
        names = sorted(files)
        writes = "; ".join(
            f'printf %s "${i + 1}" > {CONFIG_DIR}/.{name} && mv {CONFIG_DIR}/.{name} {CONFIG_DIR}/{name}'
            for i, name in enumerate(names)
        )
        script = f"set -e; {writes}; nginx -c {CONFIG_DIR}/nginx.conf -s reload"
        for pod in self.cluster.ready_pods(self.props["selectors"]["proxy"]):
            code, output = self.cluster.run(pod, CONTAINER, ["sh", "-c", script, "sh", *(files[n] for n in names)])
            if code != 0:
                raise RuntimeError(f"reconfiguring the proxy pod {pod} failed (exit {code}): {output.strip()}")

    # -- reading: counters, the replay log, predictions

    def scrape(self, candidate: bool) -> Counters:
        total = Counters()
        for pod in self._pods(candidate):
            text = self.cluster.request(pod, self.port, "/metrics", headers=self.headers)
            if text is not None:  # a pod that does not answer: its requests fail and show as errors
                total = total + parse_metrics(text.decode(errors="replace"))
        return total

    def clear_log(self) -> None:
        for pod in self.cluster.ready_pods(self.props["selectors"]["proxy"]):
            self.cluster.run(pod, CONTAINER, CLEAR_COMMAND)

    def take_log(self, limit: int) -> list[dict[str, str]]:
        logs = [self.cluster.run(pod, CONTAINER, TAKE_COMMAND)[1] for pod in self._proxies()]
        return entries_of("\n".join(logs), limit)

    def replay(self, entries: list[dict[str, str]], kind: AgreementKind) -> tuple[Agreement, int]:
        def send(pod: str, uri: str, body: str) -> list[Any] | None:
            answer = self.cluster.request(pod, self.port, uri, body=body, headers=self.headers)
            try:
                return None if answer is None else instances(json.loads(answer))
            except ValueError:
                return None

        stable, candidate = self._pods(False), self._pods(True)
        if not entries or not stable or not candidate:
            return Agreement.of(kind, []), 0
        return replay(entries, stable, candidate, self.port, kind, send=send)

    def stable_figure(self) -> float:
        """The old version's prep figure (accuracy, cosine or MAE) as its metadata says; 0 if none answers."""
        path = f"/v1/models/{self.props['model_name']}/metadata"
        for pod in self._pods(False):
            answer = self.cluster.request(pod, self.port, path, headers=self.headers)
            try:
                return float(json.loads(answer or b"")["metadata"]["modelstack"]["accuracy"])
            except (KeyError, ValueError, TypeError):
                continue
        return 0.0

    def _pods(self, candidate: bool) -> list[str]:
        return self.cluster.ready_pods(self.props["selectors"]["candidate" if candidate else "stable"])

    def _proxies(self) -> list[str]:
        return self.cluster.ready_pods(self.props["selectors"]["proxy"])


# -- the candidate Deployment ----------------------------------------------------------------------


def _start_candidate(cluster: Cluster, props: dict[str, Any]) -> None:
    """The candidate Deployment, as many pods as the stable one runs, ready within `ready_timeout_s`;
    a candidate that never gets ready is removed and `up` fails, the stable version serving throughout."""
    name, selector = props["names"]["candidate"], props["selectors"]["candidate"]
    _remove_candidate(cluster, props)
    stable = cluster.apps.read_namespaced_deployment(props["names"]["stable"], cluster.namespace)
    replicas = max(1, int(stable.spec.replicas or 1))
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": cluster.namespace, "labels": props["labels"]},
        "spec": {"replicas": replicas, "selector": {"matchLabels": selector}, "template": k8s_json(props["template"])},
    }
    cluster.apps.create_namespaced_deployment(cluster.namespace, body)
    deadline = time.monotonic() + float(props["ready_timeout_s"])
    while time.monotonic() < deadline:
        if len(cluster.ready_pods(selector)) >= replicas:
            if cluster.wait_endpoints(props["services"]["candidate"], replicas, deadline - time.monotonic()):
                time.sleep(PROXY_SYNC_S)
                return
        time.sleep(POLL_S)
    _remove_candidate(cluster, props)
    raise RuntimeError(
        f"the new version {version_of(props['image_ref'])} did not get {replicas} ready pod(s) within "
        f"{props['ready_timeout_s']:.0f} s (deploy.progress_deadline); it was removed and the previous version "
        "keeps serving"
    )


def _candidate_exists(cluster: Cluster, props: dict[str, Any]) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        cluster.apps.read_namespaced_deployment(props["names"]["candidate"], cluster.namespace)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def _remove_candidate(cluster: Cluster, props: dict[str, Any]) -> None:
    """Delete the candidate Deployment (its pods drain through their preStop delay) and wait until it is gone."""
    from kubernetes.client.exceptions import ApiException

    name = props["names"]["candidate"]
    try:
        cluster.apps.delete_namespaced_deployment(name, cluster.namespace, propagation_policy="Foreground")
    except ApiException as exc:
        if exc.status == 404:
            return
        raise
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _candidate_exists(cluster, props):
        time.sleep(POLL_S)


# -- the pod template as the API takes it -------------------------------------------------------------

_VERBATIM = {"labels", "annotations", "node_selector", "match_labels", "limits", "requests"}  # keys are data


def k8s_json(value: Any, verbatim: bool = False) -> Any:
    """A pod template written as Pulumi's Python SDK takes it (snake_case keys; numbers as state keeps them,
    floats) in the API's JSON: camelCase keys, whole numbers as integers. The keys of labels, annotations,
    selectors and resource quantities are data and stay as they are."""
    if isinstance(value, dict):
        return {
            (key if verbatim else _camel(key)): k8s_json(item, verbatim=key in _VERBATIM)
            for key, item in value.items()
            if item is not None
        }
    if isinstance(value, list):
        return [k8s_json(item) for item in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _camel(key: str) -> str:
    return re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), key)


class Rollout(Resource, module="kubernetes", name="Rollout"):
    stable_image: pulumi.Output[str]
    stable_keys: pulumi.Output[dict[str, str]]
    stable_pod: pulumi.Output[dict[str, Any]]  # the pod template's spec the stable Deployment runs
    last_rollout: pulumi.Output[Any]  # the record of the last canary or shadow rollout (None before one)

    def __init__(self, name: str, *, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(
            RolloutProvider(),
            name,
            {**props, "stable_image": None, "stable_keys": None, "stable_pod": None, "last_rollout": None},
            opts,
        )


class Settle(Resource, module="kubernetes", name="Settle"):
    def __init__(self, name: str, *, props: dict[str, Any], opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(SettleProvider(), name, props, opts)

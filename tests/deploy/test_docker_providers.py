"""The dynamic providers' diff, create, update, read (drift) and delete against an in-memory docker client."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from fake_docker import FakeDocker
from prep_reports import passing_report

from iac.build.proxy_config import split_conf
from iac.deploy.dynamic import CHECKOUT_LABEL, OWNER_LABEL, UNKNOWN

OWNER = "digits/dev/digits@0a1b2c3d"
LABELS = {OWNER_LABEL: OWNER, CHECKOUT_LABEL: str(Path.cwd())}


# -- Network -------------------------------------------------------------------------------------


def test_network_diff_replaces_what_names_it(fake_docker: FakeDocker) -> None:
    from iac.deploy.targets.docker.network import NetworkProvider

    olds = {"owner": OWNER, "network_name": "modelstack-dev-digits"}
    same = NetworkProvider().diff("id", olds, dict(olds))
    assert (same.changes, same.replaces) == (False, [])
    renamed = NetworkProvider().diff("id", olds, {**olds, "network_name": "other"})
    assert (renamed.changes, renamed.replaces, renamed.delete_before_replace) == (True, ["network_name"], True)
    # A stack made before stack ids gets one: the network (known by its id in state) stays.
    adopted = NetworkProvider().diff("id", {**olds, "owner": "digits/dev/digits"}, dict(olds))
    assert (adopted.changes, adopted.replaces) == (True, [])
    unknown = NetworkProvider().diff("id", olds, {**olds, "owner": UNKNOWN})
    assert (unknown.changes, unknown.replaces) == (True, [])


def test_network_create_takes_over_a_stale_one_read_sees_it_gone_delete_is_idempotent(fake_docker: FakeDocker) -> None:
    from iac.deploy.targets.docker.network import NetworkProvider

    stale = fake_docker.networks.create("modelstack-dev-digits", labels={OWNER_LABEL: OWNER})  # an interrupted run's
    props = {"owner": OWNER, "network_name": "modelstack-dev-digits"}
    created = NetworkProvider().create(props)
    network = fake_docker.networks.get(created.id)
    assert stale.id not in fake_docker.networks.items
    assert (network.name, network.labels) == ("modelstack-dev-digits", LABELS)
    assert created.outs == {**props, "network_id": created.id, "taken_name": "modelstack-dev-digits"}
    assert NetworkProvider().check({}, props).failures == []

    assert NetworkProvider().read(created.id, created.outs).id == created.id
    NetworkProvider().delete(created.id, created.outs)
    assert fake_docker.networks.items == {}
    assert NetworkProvider().read(created.id, created.outs).id is None  # drift: gone
    NetworkProvider().delete(created.id, created.outs)  # already gone: not an error


def test_network_held_by_another_stack_takes_the_name_with_this_stacks_id(fake_docker: FakeDocker) -> None:
    from iac.deploy.targets.docker.network import NetworkProvider

    # A second checkout of the project (same project, stack and service; its own state and id).
    theirs = fake_docker.networks.create("modelstack-dev-digits", labels={OWNER_LABEL: "digits/dev/digits@99999999"})
    props = {"owner": OWNER, "network_name": "modelstack-dev-digits"}
    assert NetworkProvider().check({}, props).failures == []  # not a collision: preview passes
    created = NetworkProvider().create(props)
    assert created.outs["taken_name"] == "modelstack-dev-digits-0a1b2c3d"
    assert fake_docker.networks.get(created.id).name == "modelstack-dev-digits-0a1b2c3d"
    assert theirs.id in fake_docker.networks.items  # untouched
    # The name is kept in state: an update (the owner label adopted) does not choose again.
    updated = NetworkProvider().update(created.id, created.outs, {**props, "taken_name": None})
    assert updated.outs["taken_name"] == "modelstack-dev-digits-0a1b2c3d"
    # A network made before names were chosen keeps the one it asked for.
    assert NetworkProvider().update("n0", props, props).outs["taken_name"] == "modelstack-dev-digits"


# -- Proxy ---------------------------------------------------------------------------------------


def proxy_props(tmp_path: Path, **changes: Any) -> dict[str, Any]:
    return {
        "owner": OWNER,
        "container_name": "modelstack-dev-digits-proxy",
        "image": "modelstack-proxy:bookworm-nginx",
        "network_name": "modelstack-dev-digits",
        "settings": {"bind_address": "127.0.0.1", "host_port": 8501.0, "proxy_port": 8080.0},
        "config_dir": str(tmp_path / "proxy"),
        "nginx_conf": "events {}\n",
        "parked_upstream": "server 127.0.0.1:9 down;\n",
        **changes,
    }


@pytest.fixture
def network(fake_docker: FakeDocker) -> None:
    fake_docker.networks.create("modelstack-dev-digits", labels=LABELS)


def test_proxy_diff_never_replaces(tmp_path: Path) -> None:
    from iac.deploy.targets.docker.proxy import ProxyProvider

    olds = proxy_props(tmp_path)
    assert ProxyProvider().diff("id", olds, dict(olds)).changes is False
    for key, value in (("nginx_conf", "events { }\n"), ("settings", {**olds["settings"], "host_port": 9000.0})):
        result = ProxyProvider().diff("id", olds, {**olds, key: value})
        assert (result.changes, result.replaces) == (True, [])  # updated in place: the port stays served


def test_proxy_create_writes_config_and_publishes_the_port(
    tmp_path: Path, fake_docker: FakeDocker, network: None, no_sleep: list[float]
) -> None:
    from iac.deploy.targets.docker.proxy import ProxyProvider

    props = proxy_props(tmp_path)
    (tmp_path / "proxy").mkdir()
    (tmp_path / "proxy" / "upstream.conf").write_text("server a:8501;\n")  # a rollout's list survives a re-create
    created = ProxyProvider().create(props)
    container = fake_docker.containers.get(created.id)
    assert container.name == "modelstack-dev-digits-proxy"
    assert container.labels == {**LABELS, "org.modelstack.role": "proxy"}
    assert container.kwargs["ports"] == {"8080/tcp": ("127.0.0.1", 8501)}
    assert container.kwargs["volumes"] == {props["config_dir"]: {"bind": "/etc/modelstack", "mode": "ro"}}
    assert container.kwargs["read_only"] is True and container.kwargs["cap_drop"] == ["ALL"]
    assert (tmp_path / "proxy" / "nginx.conf").read_text() == "events {}\n"
    assert (tmp_path / "proxy" / "upstream.conf").read_text() == "server a:8501;\n"


def test_proxy_update_reloads_for_config_and_recreates_for_the_port(
    tmp_path: Path, fake_docker: FakeDocker, network: None, no_sleep: list[float]
) -> None:
    from iac.deploy.targets.docker.proxy import ProxyProvider

    olds = ProxyProvider().create(proxy_props(tmp_path)).outs
    first = fake_docker.containers.get(olds["container_id"])

    news = {**olds, "nginx_conf": "events { worker_connections 64; }\n"}
    updated = ProxyProvider().update(olds["container_id"], olds, news)
    assert updated.outs["container_id"] == first.id
    assert first.execs == [["nginx", "-c", "/etc/modelstack/nginx.conf", "-s", "reload"]]
    assert (tmp_path / "proxy" / "nginx.conf").read_text() == news["nginx_conf"]

    moved = {**updated.outs, "settings": {**olds["settings"], "host_port": 9000.0}}
    recreated = ProxyProvider().update(first.id, updated.outs, moved)
    assert recreated.outs["container_id"] != first.id
    assert first.id not in fake_docker.containers.items
    assert fake_docker.containers.get(recreated.outs["container_id"]).kwargs["ports"] == {
        "8080/tcp": ("127.0.0.1", 9000)
    }


def test_proxy_failed_reload_is_an_error(
    tmp_path: Path, fake_docker: FakeDocker, network: None, no_sleep: list[float]
) -> None:
    from iac.deploy.targets.docker.proxy import ProxyProvider

    olds = ProxyProvider().create(proxy_props(tmp_path)).outs
    fake_docker.containers.get(olds["container_id"]).exec_exit_code = 1
    with pytest.raises(RuntimeError, match="nginx reload .* failed"):
        ProxyProvider().update(olds["container_id"], olds, {**olds, "nginx_conf": "broken"})


def test_proxy_read_sees_a_stopped_or_removed_proxy_delete_cleans_up(
    tmp_path: Path, fake_docker: FakeDocker, network: None, no_sleep: list[float]
) -> None:
    from iac.deploy.targets.docker.proxy import ProxyProvider

    outs = ProxyProvider().create(proxy_props(tmp_path)).outs
    container = fake_docker.containers.get(outs["container_id"])
    assert ProxyProvider().read(container.id, outs).id == container.id
    container.status = "exited"
    assert ProxyProvider().read(container.id, outs).id is None
    ProxyProvider().delete(container.id, outs)
    assert fake_docker.containers.items == {}
    assert not (tmp_path / "proxy").exists()
    assert ProxyProvider().read(container.id, outs).id is None


# -- Replicas ------------------------------------------------------------------------------------


@pytest.fixture
def proxy(tmp_path: Path, fake_docker: FakeDocker, network: None, no_sleep: list[float]) -> Any:
    from iac.deploy.targets.docker.proxy import ProxyProvider

    outs = ProxyProvider().create(proxy_props(tmp_path)).outs
    return fake_docker.containers.get(outs["container_id"])


@pytest.fixture
def ready(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Every replica answers the readiness probe, except those whose name contains a string added to
    the returned set; the switched proxy serves at once."""
    from iac.deploy.targets.docker import replicas

    never: set[str] = set()
    monkeypatch.setattr(replicas, "_ready", lambda container, props: not any(v in container.name for v in never))
    monkeypatch.setattr(replicas, "_wait_serving", lambda props: None)
    return never


def replicas_props(tmp_path: Path, version: str = "v1", replicas: int = 2, **changes: Any) -> dict[str, Any]:
    return {
        "owner": OWNER,
        "base_name": "modelstack-dev-digits",
        "image_id": "sha256:abc",
        "network_name": "modelstack-dev-digits",
        "replicas": float(replicas),
        "settings": {"port": 8501.0, "host_port": 8501.0, "cpus": 1.0, "memory_bytes": 536870912.0, "pids": 256.0},
        "version": version,
        "api_key": "",
        "api_key_env": None,
        "proxy_name": "modelstack-dev-digits-proxy",
        "config_dir": str(tmp_path / "proxy"),
        "model_name": "digits",
        "inputs": [["pixels", [64.0], "float32"]],
        "artifact_sha256": "f" * 64,
        "probe_host": "127.0.0.1",
        "ready_timeout_s": 1.0,
        **changes,
    }


def model_names(fake: FakeDocker) -> list[str]:
    return sorted(c.name for c in fake.containers.list(all=True, filters={"label": "org.modelstack.role=model"}))


def upstream(tmp_path: Path) -> str:
    return (tmp_path / "proxy" / "upstream.conf").read_text()


def test_replicas_diff_never_replaces() -> None:
    from iac.deploy.targets.docker.replicas import ReplicasProvider

    olds = {"version": "v1", "replicas": 2.0, "healthy": True, "api_key": "x"}
    assert ReplicasProvider().diff("id", olds, dict(olds)).changes is False
    for key, value in (("version", "v2"), ("replicas", 3.0), ("healthy", False)):
        result = ReplicasProvider().diff("id", {**olds, key: value}, olds)
        assert (result.changes, result.replaces) == (True, [])  # a rolling update, never a replacement
    assert ReplicasProvider().diff("id", olds, {**olds, "version": UNKNOWN}).changes is True


def test_replicas_create_runs_hardened_replicas_and_points_the_proxy_at_them(
    tmp_path: Path, fake_docker: FakeDocker, proxy: Any, ready: set[str]
) -> None:
    from iac.deploy.targets.docker.replicas import ReplicasProvider

    created = ReplicasProvider().create(replicas_props(tmp_path))
    names = ["modelstack-dev-digits-v1-0", "modelstack-dev-digits-v1-1"]
    assert created.outs["replica_names"] == names and created.outs["healthy"] is True
    assert model_names(fake_docker) == names
    replica = fake_docker.containers.get(names[0])
    assert replica.labels == {**LABELS, "org.modelstack.role": "model", "org.modelstack.version": "v1"}
    assert "ports" not in replica.kwargs  # only the proxy is published
    assert (replica.kwargs["mem_limit"], replica.kwargs["nano_cpus"], replica.kwargs["pids_limit"]) == (
        512 * 1024**2,
        10**9,
        256,
    )
    assert replica.kwargs["read_only"] and replica.kwargs["security_opt"] == ["no-new-privileges"]
    assert upstream(tmp_path) == "".join(f"server {n}:8501 max_fails=1 fail_timeout=2s;\n" for n in names)
    assert proxy.execs == [["nginx", "-c", "/etc/modelstack/nginx.conf", "-s", "reload"]]


def test_replicas_update_rolls_new_ones_in_and_retires_the_old(
    tmp_path: Path, fake_docker: FakeDocker, proxy: Any, ready: set[str]
) -> None:
    from iac.deploy.targets.docker.replicas import ReplicasProvider

    olds = ReplicasProvider().create(replicas_props(tmp_path)).outs
    news = replicas_props(tmp_path, version="v2", replicas=3)
    updated = ReplicasProvider().update("modelstack-dev-digits", olds, news)
    wanted = [f"modelstack-dev-digits-v2-{i}" for i in range(3)]
    assert updated.outs["replica_names"] == wanted
    assert model_names(fake_docker) == wanted
    assert "v1" not in upstream(tmp_path) and len(proxy.execs) == 2


def test_replicas_api_key_reaches_the_container_environment_only(
    tmp_path: Path, fake_docker: FakeDocker, proxy: Any, ready: set[str]
) -> None:
    from iac.deploy.targets.docker.replicas import ReplicasProvider

    ReplicasProvider().create(replicas_props(tmp_path, api_key="s3cret", api_key_env="DIGITS_API_KEY"))
    replica = fake_docker.containers.get("modelstack-dev-digits-v1-0")
    assert replica.kwargs["environment"] == {"DIGITS_API_KEY": "s3cret"}
    assert not any("s3cret" in str(b) for b in fake_docker.images.builds)


def test_replicas_that_never_get_ready_are_removed_and_the_old_ones_keep_serving(
    tmp_path: Path,
    fake_docker: FakeDocker,
    proxy: Any,
    ready: set[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from iac.deploy.targets.docker import replicas
    from iac.deploy.targets.docker.replicas import ReplicasProvider, RolloutError

    olds = ReplicasProvider().create(replicas_props(tmp_path)).outs
    before = upstream(tmp_path)
    ready.add("-v2-")
    clock = itertools.count()
    monkeypatch.setattr(replicas.time, "monotonic", lambda: float(next(clock)))  # a second per look
    with pytest.raises(RolloutError, match="did not become ready within 1 s .*previous version keeps serving"):
        ReplicasProvider().update("modelstack-dev-digits", olds, replicas_props(tmp_path, version="v2"))
    assert model_names(fake_docker) == olds["replica_names"]
    assert upstream(tmp_path) == before


def test_replicas_read_marks_drift_unhealthy_and_delete_removes_every_replica(
    tmp_path: Path, fake_docker: FakeDocker, proxy: Any, ready: set[str]
) -> None:
    from iac.deploy.targets.docker.replicas import ReplicasProvider

    outs = ReplicasProvider().create(replicas_props(tmp_path)).outs
    read = ReplicasProvider().read("modelstack-dev-digits", outs)
    assert read.outs["healthy"] is True and "replica_names" not in read.inputs
    fake_docker.containers.get(outs["replica_names"][0]).remove(force=True)  # removed by hand
    read = ReplicasProvider().read("modelstack-dev-digits", outs)
    assert read.outs["healthy"] is False
    # The next `up` diffs the program's healthy=True against that and rolls the same version again.
    assert ReplicasProvider().diff("id", read.outs, {**read.outs, "healthy": True}).changes is True
    assert ReplicasProvider().update("id", read.outs, outs).outs["replica_names"] == outs["replica_names"]
    assert model_names(fake_docker) == outs["replica_names"]

    ReplicasProvider().delete("modelstack-dev-digits", outs)
    assert model_names(fake_docker) == []


# -- Image ---------------------------------------------------------------------------------------


@pytest.fixture
def rendered(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """render() writes a one-line Dockerfile and records where."""
    import iac.build.render

    contexts: list[Path] = []

    def fake_render(spec: Any, artifact: Path, report: dict, out_dir: Path) -> list[Path]:
        out_dir.mkdir(parents=True)
        (out_dir / "Dockerfile").write_text("FROM scratch\n")
        contexts.append(out_dir)
        return [out_dir / "Dockerfile"]

    monkeypatch.setattr(iac.build.render, "render", fake_render)
    return contexts


@pytest.fixture
def spec_json(spec_folder: Path) -> dict[str, Any]:
    from iac.spec.load import load_resolved

    return load_resolved(spec_folder / "model.yaml").model_dump(mode="json")


def image_props(spec: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    return {
        "owner": OWNER,
        "tag": "modelstack-dev-digits:0123456789ab",
        "context_key": "k1",
        "spec": spec or {},
        "artifact_path": "/cache/model.tflite",
        "artifact_sha256": "a" * 64,
        "report": passing_report().model_dump(mode="json"),
        **changes,
    }


def test_image_diff_updates_in_place() -> None:
    from iac.deploy.image import ImageProvider

    olds = image_props()
    assert ImageProvider().diff("id", olds, dict(olds)).changes is False
    for key in ("context_key", "tag", "artifact_sha256"):
        result = ImageProvider().diff("id", olds, {**olds, key: UNKNOWN})
        assert (result.changes, result.replaces) == (True, [])


def test_image_create_builds_locally_update_sweeps_unused_images(
    fake_docker: FakeDocker, rendered: list[Path], spec_json: dict[str, Any]
) -> None:
    from iac.deploy.image import ImageProvider

    first = ImageProvider().create(image_props(spec_json))
    assert first.outs["image_id"] == first.id
    assert fake_docker.images.builds[0]["tag"] == "modelstack-dev-digits:0123456789ab"
    assert fake_docker.images.builds[0]["labels"] == LABELS

    fake_docker.networks.create("net")
    running = fake_docker.containers.run(first.id, name="still-serving", network="net", labels=LABELS)
    second = ImageProvider().update(
        first.id, first.outs, image_props(spec_json, context_key="k2", tag="modelstack-dev-digits:k2")
    )
    assert set(fake_docker.images.items) == {first.id, second.outs["image_id"]}  # the old one still runs a replica
    running.remove(force=True)
    third = ImageProvider().update(
        second.outs["image_id"], second.outs, image_props(spec_json, context_key="k3", tag="t3")
    )
    assert set(fake_docker.images.items) == {third.outs["image_id"]}
    assert len(rendered) == 3


def test_image_read_sees_a_removed_image_delete_removes_every_image_of_the_owner(
    fake_docker: FakeDocker,
    rendered: list[Path],
    spec_json: dict[str, Any],
) -> None:
    from iac.deploy.image import ImageProvider

    outs = ImageProvider().create(image_props(spec_json)).outs
    other = fake_docker.images.add("someone-elses:latest")
    assert ImageProvider().read(outs["image_id"], outs).id == outs["image_id"]
    fake_docker.images.add("modelstack-dev-digits:older", LABELS)
    ImageProvider().delete(outs["image_id"], outs)
    assert set(fake_docker.images.items) == {other.id}
    assert ImageProvider().read(outs["image_id"], outs).id is None


# -- ModelArtifact -------------------------------------------------------------------------------


def test_artifact_diff_read_delete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from iac.deploy import artifact
    from iac.deploy.artifact import ModelArtifactProvider

    olds = {"key": "k1", "request": {}, "artifact_path": str(tmp_path / "model.tflite")}
    assert ModelArtifactProvider().diff("k1", olds, dict(olds)).changes is False
    changed = ModelArtifactProvider().diff("k1", olds, {**olds, "key": "k2"})
    assert (changed.changes, changed.replaces) == (True, [])  # content-addressed: an update, never a replacement

    preps: list[dict] = []
    monkeypatch.setattr(
        artifact, "_prep", lambda props: preps.append(props) or {"artifact_path": olds["artifact_path"]}
    )
    created = ModelArtifactProvider().create(olds)
    assert (created.id, preps) == ("k1", [olds])

    assert ModelArtifactProvider().read("k1", olds).id is None  # the cache entry is gone: drift
    (tmp_path / "model.tflite").write_bytes(b"tflite")
    assert ModelArtifactProvider().read("k1", olds).id == "k1"
    ModelArtifactProvider().delete("k1", olds)
    assert (tmp_path / "model.tflite").exists(), "cache entries are shared by content and never deleted"


# -- Collisions: names and ports another stack (or no stack) holds -------------------------------

STRANGER = {OWNER_LABEL: "digits/dev/digits@99999999", CHECKOUT_LABEL: "/home/other/checkout"}
WHERE = {"name": "model.yaml:3", "deploy.host_port": "model.yaml:40"}


def test_a_strangers_network_is_left_untouched_and_a_held_suffixed_name_is_reported(fake_docker: FakeDocker) -> None:
    from iac.deploy.targets.docker.network import NetworkProvider

    theirs = fake_docker.networks.create("modelstack-dev-digits", labels={})  # not modelstack's
    props = {"owner": OWNER, "network_name": "modelstack-dev-digits", "where": WHERE}
    assert NetworkProvider().check({}, props).failures == []
    assert NetworkProvider().check({}, {**props, "owner": UNKNOWN}).failures == []  # a first preview
    # Both names taken (someone copied this stack's id): one located line, nothing removed.
    also = fake_docker.networks.create("modelstack-dev-digits-0a1b2c3d", labels=STRANGER)
    with pytest.raises(RuntimeError) as raised:
        NetworkProvider().create(props)
    assert str(raised.value) == (
        "model.yaml:3: name: the network modelstack-dev-digits-0a1b2c3d is already taken by network "
        "modelstack-dev-digits-0a1b2c3d of stack digits/dev/digits@99999999 (checkout /home/other/checkout); "
        "give this service another name (or run the stack under another stack name)"
    )
    assert fake_docker.networks.items == {theirs.id: theirs, also.id: also}


def test_a_stack_made_before_stack_ids_keeps_its_own_objects(
    tmp_path: Path, fake_docker: FakeDocker, no_sleep: list[float]
) -> None:
    from iac.deploy.targets.docker.network import NetworkProvider
    from iac.deploy.targets.docker.proxy import ProxyProvider

    legacy = {OWNER_LABEL: "digits/dev/digits"}
    fake_docker.networks.create("modelstack-dev-digits", labels=legacy)
    olds = proxy_props(tmp_path, owner="digits/dev/digits")
    fake_docker.containers.run(
        "modelstack-proxy:bookworm-nginx",
        name="modelstack-dev-digits-proxy",
        network="modelstack-dev-digits",
        labels=legacy,
        ports={"8080/tcp": ("127.0.0.1", 8501)},
    )
    # The state's old owner names them: no collision, and the proxy's update replaces its own container.
    assert NetworkProvider().check({"owner": "digits/dev/digits"}, {**olds, "owner": OWNER}).failures == []
    assert ProxyProvider().check(olds, proxy_props(tmp_path)).failures == []
    assert len(ProxyProvider().check({}, proxy_props(tmp_path)).failures) == 2  # another checkout: name and port
    updated = ProxyProvider().update("old", olds, proxy_props(tmp_path))
    assert [c.labels[OWNER_LABEL] for c in fake_docker.containers.items.values()] == [OWNER]
    assert updated.outs["container_id"] in fake_docker.containers.items


def test_a_taken_host_port_names_its_holder_and_the_field(
    tmp_path: Path, fake_docker: FakeDocker, network: None, no_sleep: list[float]
) -> None:
    from iac.deploy.targets.docker.proxy import ProxyProvider

    other = fake_docker.containers.run("img", name="someone-elses-web", labels={}, ports={"80/tcp": ("0.0.0.0", 8501)})
    props = proxy_props(tmp_path, where=WHERE)
    failures = ProxyProvider().check({}, props).failures
    assert [(f.property, f.reason) for f in failures] == [
        (
            "deploy.host_port",
            (
                "model.yaml:40: deploy.host_port: port 8501 on 127.0.0.1 is taken by container someone-elses-web "
                "(not made by modelstack); set deploy.host_port to a free port"
            ),
        )
    ]
    with pytest.raises(RuntimeError, match="deploy.host_port: port 8501"):
        ProxyProvider().create(props)
    assert list(fake_docker.containers.items) == [other.id]

    fake_docker.host_ports_in_use.add(9000)  # a process of the host, not a container
    moved = proxy_props(tmp_path, settings={**props["settings"], "host_port": 9000.0})
    assert (
        "taken by a process on this host that is not a container" in ProxyProvider().check({}, moved).failures[0].reason
    )
    # Another port, another address: free.
    assert (
        ProxyProvider().check({}, proxy_props(tmp_path, settings={**props["settings"], "host_port": 9001.0})).failures
        == []
    )


# -- Canary and shadow: the provider's control flow (each window's figures given) ----------------

PLAN = {
    "strategy": "canary",
    "steps": [{"weight": 10, "hold": 1.0}, {"weight": 50, "hold": 1.0}],
    "analysis": {
        "max_error_rate_increase": 0.01,
        "max_p99_ratio": 2.0,
        "min_agreement": None,
        "min_cosine": None,
        "max_mae": None,
        "min_samples": 50,
        "inconclusive": "fail",
        "max_holds": 2,
    },
}


@pytest.fixture
def windows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list:
    """Each window's verdict in turn (given, not measured: the fake engine's replicas serve no HTTP);
    records the split each window ran with."""
    from iac.deploy.rollout import steps
    from iac.deploy.targets.docker import canary

    verdicts: list = []
    splits: list[str] = []

    def window(versions: Any, *_: Any) -> Any:
        splits.append((Path(versions.props["config_dir"]) / "split.conf").read_text())
        return verdicts.pop(0)

    monkeypatch.setattr(steps, "_window", window)
    monkeypatch.setattr(canary, "_stable_figure", lambda *_: 0.97)
    verdicts.append(splits)  # the last element: where the splits are recorded
    return verdicts


def test_a_canary_that_fails_a_step_goes_back_to_the_old_version_and_says_why(
    tmp_path: Path, fake_docker: FakeDocker, proxy: Any, ready: set[str], windows: list
) -> None:
    from iac.deploy.rollout.analysis import Verdict
    from iac.deploy.targets.docker.replicas import ReplicasProvider

    splits = windows.pop()
    olds = ReplicasProvider().create(replicas_props(tmp_path)).outs
    windows += [Verdict("pass", samples=120), Verdict("fail", "top-1 agreement", "0.100", "1.000", ">= 0.940", 200)]
    updated = ReplicasProvider().update("id", olds, replicas_props(tmp_path, version="v2", rollout=PLAN))
    record = updated.outs["last_rollout"]
    assert record["outcome"] == "rolled back" and record["version"] == "v2"
    assert record["reason"] == (
        "canary rollout of version v2 rolled back at step 2/2 (50% of requests): failed on "
        "top-1 agreement: candidate 0.100, stable 1.000, threshold >= 0.940, 200 samples"
    )
    # The state still says the old version serves; only its replicas run, and they take everything.
    assert updated.outs["version"] == "v1" and updated.outs["replica_names"] == olds["replica_names"]
    assert model_names(fake_docker) == olds["replica_names"]
    assert "v1" in upstream(tmp_path) and "v2" not in upstream(tmp_path)
    assert (tmp_path / "proxy" / "split.conf").read_text() == split_conf()
    assert ["10% model_candidate" in s for s in splits] == [True, False] and "50% model_candidate" in splits[1]
    assert "rolled back" in (tmp_path / "proxy" / "rollout.log").read_text()


def test_a_canary_that_passes_every_step_is_promoted(
    tmp_path: Path, fake_docker: FakeDocker, proxy: Any, ready: set[str], windows: list
) -> None:
    from iac.deploy.rollout.analysis import Verdict
    from iac.deploy.targets.docker.replicas import ReplicasProvider

    windows.pop()
    olds = ReplicasProvider().create(replicas_props(tmp_path)).outs
    windows += [Verdict("pass", samples=120), Verdict("pass", samples=600)]
    updated = ReplicasProvider().update("id", olds, replicas_props(tmp_path, version="v2", rollout=PLAN))
    assert updated.outs["last_rollout"]["outcome"] == "promoted" and updated.outs["version"] == "v2"
    assert model_names(fake_docker) == ["modelstack-dev-digits-v2-0", "modelstack-dev-digits-v2-1"]
    assert (tmp_path / "proxy" / "split.conf").read_text() == split_conf()


def test_an_inconclusive_window_holds_when_asked_then_fails(
    tmp_path: Path, fake_docker: FakeDocker, proxy: Any, ready: set[str], windows: list
) -> None:
    from iac.deploy.rollout.analysis import Verdict
    from iac.deploy.targets.docker.replicas import ReplicasProvider

    windows.pop()
    olds = ReplicasProvider().create(replicas_props(tmp_path)).outs
    held = {**PLAN, "analysis": {**PLAN["analysis"], "inconclusive": "hold", "max_holds": 1}}
    windows += [Verdict("inconclusive", "requests", "0", "0", ">= 50", 0)] * 2
    updated = ReplicasProvider().update("id", olds, replicas_props(tmp_path, version="v2", rollout=held))
    assert updated.outs["last_rollout"]["outcome"] == "inconclusive"
    assert [s["outcome"] for s in updated.outs["last_rollout"]["steps"]] == ["inconclusive", "inconclusive"]
    assert updated.outs["version"] == "v1"


def test_the_warm_up_request_names_every_input() -> None:
    from iac.deploy.targets.docker import replicas

    # One input or several, the same named row (Pulumi state hands shapes back as floats).
    assert replicas.warm_up_body([["pixels", [2.0], "float32"]]) == {"instances": [{"pixels": [0.0, 0.0]}]}
    assert replicas.warm_up_body([["user_id", [1.0], "int32"], ["item_id", [1.0], "int32"]]) == {
        "instances": [{"user_id": [0], "item_id": [0]}]
    }
    assert replicas.warm_up_body([["text", [], "string"]]) == {"instances": [{"text": "warm-up"}]}

"""The resource graph ModelService declares for the Docker target, under Pulumi mocks (no engine, no Docker)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pulumi
import pytest
from prep_reports import passing_report
from pulumi.runtime.mocks import MockMonitor, MockResourceArgs, Mocks
from pulumi_mocks import use_mocks

# Each child's type token: dynamic providers register as pulumi-python:dynamic/<module>:<name>.
TYPES = {
    "artifact": "pulumi-python:dynamic/modelstack:ModelArtifact",
    "image": "pulumi-python:dynamic/docker:Image",
    "network": "pulumi-python:dynamic/docker:Network",
    "proxy": "pulumi-python:dynamic/docker:Proxy",
    "replicas": "pulumi-python:dynamic/docker:Replicas",
    "healer": "pulumi-python:dynamic/modelstack:Healer",
    "identity": "pulumi-python:dynamic/modelstack:StackIdentity",
}


class Recorder(MockMonitor):
    """The mock monitor, also keeping each registration's parent URN (the URN alone shows only
    the parent's type)."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.parents: dict[str, str] = {}

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method's name
        response = super().RegisterResource(request)
        self.parents[response.urn] = request.parent
        return response

    def urn_of(self, type_: str, name: str) -> str:
        """The one registered URN whose own type is `type_` and name is `name`."""
        found = [urn for urn in self.parents if urn.endswith(f"{type_}::{name}")]
        assert len(found) == 1, (type_, name, list(self.parents))
        return found[0]


class DeployMocks(Mocks):
    """Each dynamic resource "creates" with what its provider would add to its inputs."""

    def __init__(self) -> None:
        self.inputs: dict[str, dict[str, Any]] = {}

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict]:
        self.inputs[args.name] = args.inputs
        if not args.custom:
            return None, {}
        outs = dict(args.inputs)
        suffix = args.name.rsplit("-", 1)[-1]
        if suffix == "artifact":
            report = passing_report(size_bytes=102400, accuracy=0.97).model_copy(update={"model_sha256": "m" * 64})
            outs.update(
                artifact_path="/cache/a.tflite",
                artifact_sha256=report.artifact_sha256,
                variant=report.variant,
                size_bytes=report.size_bytes,
                accuracy=report.accuracy,
                baseline_accuracy=report.baseline_accuracy,
                report=report.model_dump(mode="json"),
            )
        elif suffix == "image":
            outs["image_id"] = "sha256:" + "1" * 64
        elif suffix == "network":
            outs["network_id"] = "n1"
        elif suffix == "proxy":
            outs["container_id"] = "c1"
        elif suffix == "replicas":
            outs["replica_names"] = [
                f"{args.inputs['base_name']}-{args.inputs['version']}-{i}" for i in range(int(args.inputs["replicas"]))
            ]
        elif suffix == "healer":
            outs["pid"] = 4242
        elif suffix == "identity":
            outs["stack_id"] = "0a1b2c3d"
        return f"{args.name}-id", outs

    def call(self, args: Any) -> tuple[dict, None]:
        return {}, None


CACHED = passing_report(size_bytes=4096, accuracy=0.98)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty prep cache of the test's own."""
    monkeypatch.setenv("MODELSTACK_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def seed(cache: Path, spec_file: Path) -> None:
    """The spec's prep in the cache, as `modelstack prep` leaves it (a graph test runs no TensorFlow)."""
    from iac.spec.load import load_resolved
    from modelprep.cache import Cache
    from modelprep.prep import REPORT
    from modelprep.request import prep_key, prep_request

    key = prep_key(prep_request(load_resolved(spec_file)))
    Cache(cache).put(key, {REPORT: CACHED.model_dump_json().encode(), "model.tflite": b"tflite"})


def register(spec_folder: Path, preview: bool) -> tuple[Recorder, DeployMocks, dict[str, Any]]:
    from iac.deploy.service import ModelService, ModelServiceArgs
    from iac.spec.load import load_resolved

    mocks = DeployMocks()
    monitor = Recorder(mocks)
    use_mocks(mocks, preview=preview, monitor=monitor)
    spec = load_resolved(spec_folder / "model.yaml")
    resolved: dict[str, Any] = {}

    @pulumi.runtime.test
    def build() -> pulumi.Output:
        service = ModelService("digits", ModelServiceArgs(spec, "digits", "dev"))
        names = list(service.outputs)
        return pulumi.Output.all(*service.outputs.values()).apply(lambda values: resolved.update(zip(names, values)))

    build()
    return monitor, mocks, resolved


@pytest.fixture
def graph(spec_folder: Path, cache: Path) -> tuple[Recorder, DeployMocks, dict[str, Any]]:
    """ModelService for the digits spec (its prep cached), registered against the mocks; its outputs resolved."""
    seed(cache, spec_folder / "model.yaml")
    return register(spec_folder, preview=False)


def test_children_are_named_after_the_component_and_parented_to_it(graph: tuple[Recorder, DeployMocks, dict]) -> None:
    monitor, _, _ = graph
    service = monitor.urn_of("modelstack:index:ModelService", "digits")
    target = monitor.urn_of("modelstack:docker:Target", "digits")  # the target carries the service's name
    assert monitor.parents[target] == service
    for child in ("identity", "artifact", "image"):
        assert monitor.parents[monitor.urn_of(TYPES[child], f"digits-{child}")] == service, child
    for child in ("network", "proxy", "replicas", "healer"):
        assert monitor.parents[monitor.urn_of(TYPES[child], f"digits-{child}")] == target, child
    stack = monitor.urn_of("pulumi:pulumi:Stack", "digits-dev")
    assert monitor.parents[service] == stack
    assert len(monitor.parents) == 10, "the stack, the service, its target and seven resources, nothing else"


def test_inputs_wire_each_stage_to_the_next(graph: tuple[Recorder, DeployMocks, dict]) -> None:
    _, mocks, _ = graph
    owner, base = "digits/dev/digits@0a1b2c3d", "modelstack-dev-digits"  # the stack id from the state
    image, replicas = mocks.inputs["digits-image"], mocks.inputs["digits-replicas"]
    assert image["owner"] == owner and image["tag"].startswith(f"{base}:")
    assert image["artifact_sha256"] == "a" * 64  # the artifact's output feeds the image
    assert mocks.inputs["digits-network"]["network_name"] == base
    proxy = mocks.inputs["digits-proxy"]
    assert proxy["container_name"] == f"{base}-proxy" and proxy["network_name"] == base
    assert proxy["settings"] == {"bind_address": "127.0.0.1", "host_port": 8501, "proxy_port": 8080}
    assert replicas["image_id"] == "sha256:" + "1" * 64 and replicas["replicas"] == 2
    assert replicas["proxy_name"] == f"{base}-proxy" and replicas["config_dir"] == proxy["config_dir"]
    assert replicas["settings"]["memory_bytes"] == 512 * 1024**2
    assert mocks.inputs["digits-healer"]["owner"] == owner


def test_outputs(graph: tuple[Recorder, DeployMocks, dict], spec_folder: Path) -> None:
    from iac.deploy.targets.docker.replicas import version_of
    from iac.deploy.targets.docker.settings import replica_settings
    from iac.review import model_fields
    from iac.spec.load import load_resolved
    from modelprep.request import prep_key, prep_request

    _, mocks, outputs = graph
    version = version_of("sha256:" + "1" * 64, replica_settings(load_resolved(spec_folder / "model.yaml")), "")
    assert mocks.inputs["digits-replicas"]["version"] == version
    assert outputs == {
        "endpoint": "http://127.0.0.1:8501/v1/models/digits:predict",
        "base_url": "http://127.0.0.1:8501",
        "version": version,
        "replicas": 2,
        "image_id": "sha256:" + "1" * 64,
        "model_sha256": "m" * 64,
        "variant": "litert-int8",
        "artifact_size_bytes": 102400,
        "accuracy": 0.97,
        "model": {
            **model_fields(CACHED, load_resolved(spec_folder / "model.yaml")),
            "rollout": f"prep {prep_key(prep_request(load_resolved(spec_folder / 'model.yaml')))[:12]} by rolling: "
            "the new replicas start, take every request once ready, the old ones drain",
        },
        "last_rollout": None,  # no canary or shadow rollout yet
    }


@pytest.mark.parametrize(
    "deploy", [{"replicas": 1}, {"target": "kubernetes", "registry": "127.0.0.1:5000"}], ids=["docker", "kubernetes"]
)
def test_api_key_guard_is_once_for_every_target(spec_folder: Path, deploy: dict[str, Any]) -> None:
    """A spec asking for an API key on a stack without one fails in ModelService, located, before any
    target sees it; with the key, every target is handed the variable's name and the secret together."""
    import yaml

    from iac.deploy.service import api_key_of
    from iac.spec.errors import UserError
    from iac.spec.load import load_resolved

    path = spec_folder / "model.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["serving"] = {**doc.get("serving", {}), "api_key_env": "MODELSTACK_API_KEY"}
    doc["deploy"] = deploy
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    spec = load_resolved(path)
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.strip().startswith("api_key_env:"))
    with pytest.raises(UserError) as info:
        api_key_of(spec, None)
    (problem,) = info.value.problems
    assert str(problem).startswith(f"model.yaml:{line}: serving.api_key_env: asks for an API key in MODELSTACK_API_KEY")
    key = api_key_of(spec, "s3cret")
    assert key is not None and (key.env, key.secret) == ("MODELSTACK_API_KEY", "s3cret")
    assert (
        api_key_of(
            spec.model_copy(
                update={
                    "spec": spec.spec.model_copy(
                        update={"serving": spec.spec.serving.model_copy(update={"api_key_env": None})}
                    )
                }
            ),
            "unused",
        )
        is None
    )


def test_preview_shows_the_cached_models_fields_or_that_prep_is_needed(spec_folder: Path, cache: Path) -> None:
    from iac.review import model_fields
    from iac.spec.load import load_resolved
    from modelprep.request import prep_key, prep_request

    _, mocks, _ = register(spec_folder, preview=True)  # nothing cached, and preview preps nothing
    key = prep_key(prep_request(load_resolved(spec_folder / "model.yaml")))
    rolling = f"prep {key[:12]} by rolling: the new replicas start, take every request once ready, the old ones drain"
    assert mocks.inputs["digits-artifact"]["model"] == {"prep": "prep needed", "rollout": rolling}
    assert mocks.inputs["digits-artifact"].get("variant") is None and not (cache / "prep").exists()

    seed(cache, spec_folder / "model.yaml")
    _, mocks, _ = register(spec_folder, preview=True)
    artifact = mocks.inputs["digits-artifact"]
    fields = model_fields(CACHED, load_resolved(spec_folder / "model.yaml"))
    assert artifact["model"] == {**fields, "rollout": rolling} and fields == {
        "variant": "litert-int8",
        "bytes": 4096,
        "accuracy": 0.98,
        "signature": "pixels[64]:float32",
        "latency_p99_us": 9.0,
        "sha256": CACHED.artifact_sha256[:12],
    }
    # What the provider's outputs will be, known at preview: the stack's outputs show the new model.
    assert (artifact["variant"], artifact["size_bytes"], artifact["accuracy"]) == ("litert-int8", 4096, 0.98)


def test_the_rollout_plan_reads_as_the_spec_says() -> None:
    from iac.review import rollout_plan
    from iac.spec.models import ResolvedSpec

    spec = ResolvedSpec.model_validate(
        {
            "spec_file": "model.yaml",
            "model_path": "m.keras",
            "calibration_path": "c.npz",
            "evaluation_path": "e.npz",
            "spec": {
                "name": "digits",
                "model": {"path": "m.keras", "inputs": [{"name": "pixels", "shape": [64]}]},
                "data": {"calibration": "c.npz", "evaluation": "e.npz"},
                "deploy": {"rollout": {"strategy": "canary", "steps": [{"weight": 10, "hold": 30}, {"weight": 50}]}},
            },
        }
    )
    assert rollout_plan(spec) == (
        "canary: 10% for 30 s, 50% for 30 s, then 100%; each step judged on error rate <= stable + 0.01, "
        "p99 <= 2 x stable, top-1 agreement >= 2 x prep accuracy - 1, >= 50 samples (fewer: fail)"
    )

"""What a text-generation model's deploy derives from the model, without Docker or llama.cpp: the replica's
memory (weights + KV cache from the GGUF's metadata + runtime), the located error for a deploy.memory
below it, the stop grace period for streams, and the image's requirements and serving.json."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from llm_support import write_spec
from prep_reports import passing_report

from iac.build.render import requirements_file, serving_config
from iac.deploy.targets.docker.settings import endpoint, memory_limit, replica_settings, warm_up
from iac.spec.errors import UserError
from iac.spec.load import load_resolved
from modelprep.families import serving_needs
from modelprep.families.llm.family import RUNTIME_BYTES
from modelprep.family import ServingNeeds
from modelprep.report import Notes, PrepReport
from serving.config import ServingConfig

MIB = 2**20
SERVING = "serving:\n  max_sequences: 2\n"


def llm_report(size: int = 3_000_000, tokens_per_s: float = 100.0) -> PrepReport:
    return passing_report(
        name="gguf-q8_0",
        runtime="llama.cpp",
        quantization="q8_0",
        artifact_file="model.gguf",
        size_bytes=size,
        notes=Notes(context_length=512, generation_tokens_per_s=tokens_per_s),
    )


def test_memory_is_weights_plus_kv_cache_plus_runtime(chat_folder: Path) -> None:
    spec = load_resolved(write_spec(chat_folder, SERVING))
    needs = serving_needs(spec, llm_report(), chat_folder / "model" / "tiny.gguf")
    assert needs is not None
    # The tiny model: 2 layers x 2 KV heads x (64 + 64) x 2 bytes = 1,024 bytes a token; 512 tokens x 2 sequences.
    kv = 512 * 2 * 2 * 2 * (64 + 64) * 2
    assert needs.memory_bytes == math.ceil((3_000_000 + kv + RUNTIME_BYTES) * 1.10 / MIB) * MIB
    assert "KV cache 1 MiB (512 tokens x 2 sequences x 1,024 bytes: 2 layers x 2 KV heads x (64 + 64)" in (
        needs.memory_detail
    )
    assert needs.drain_s == 11.0  # 512 tokens x 2 sequences at 100 tokens/s, rounded up
    slow = serving_needs(spec, llm_report(tokens_per_s=0.5), chat_folder / "model" / "tiny.gguf")
    assert slow is not None and slow.drain_s == 600.0  # bounded


NEEDS = ServingNeeds(memory_bytes=300 * MIB, memory_detail="weights 100 MiB + KV cache 100 MiB", drain_s=40.0)


def test_deploy_memory_left_out_is_the_need_and_written_below_it_is_a_located_error(chat_folder: Path) -> None:
    spec = load_resolved(write_spec(chat_folder, SERVING))
    assert memory_limit(spec, NEEDS) == 300 * MIB
    assert memory_limit(spec, None) == 512 * MIB  # a family with no needs: the default, as before
    written = load_resolved(write_spec(chat_folder, SERVING + "deploy:\n  memory: 1Gi\n"))
    assert memory_limit(written, NEEDS) == 1024 * MIB
    low = load_resolved(write_spec(chat_folder, SERVING + "deploy:\n  memory: 256Mi\n"))
    with pytest.raises(UserError) as info:
        replica_settings(low, NEEDS)
    [problem] = info.value.problems
    assert (problem.where, problem.path) == ("model.yaml:10", "deploy.memory")
    assert problem.problem == "256Mi is less than the 300 MiB a replica of this model needs: " + NEEDS.memory_detail
    assert "at least 300Mi" in problem.fix


def test_stop_grace_covers_the_drain_and_only_models_with_needs_carry_it(chat_folder: Path) -> None:
    spec = load_resolved(write_spec(chat_folder, SERVING))
    assert replica_settings(spec, NEEDS)["stop_grace_s"] == 45
    assert "stop_grace_s" not in replica_settings(spec, None)  # other models' replicas keep their version


def test_image_gets_the_llama_runtime_no_inputs_and_the_drain(chat_folder: Path) -> None:
    spec = load_resolved(write_spec(chat_folder, SERVING))
    report = llm_report()
    assert requirements_file(spec, report).name == "requirements-llm.txt"
    config = serving_config(spec, report, chat_folder / "model" / "tiny.gguf")
    assert config["task"] == "text-generation" and config["inputs"] == []
    assert config["drain_timeout_s"] == 11.0 and config["max_sequences"] == 2
    loaded = ServingConfig.from_dict(config)  # the server takes what render writes
    assert loaded.drain_timeout_s == 11.0 and loaded.inputs == []
    assert endpoint(spec).endswith("/v1/chat/completions")  # the stack's `endpoint` output
    probe = warm_up(spec)["warm_up"]
    assert probe["path"] == "/v1/completions"
    assert json.loads(probe["body"]) == {"model": "chat", "prompt": "Hello", "max_tokens": 1, "temperature": 0}


@pytest.mark.parametrize("drain", [0, -1, 4000, "9", True])
def test_serving_json_drain_is_checked(drain: object) -> None:
    with pytest.raises(ValueError, match="drain_timeout_s: must be seconds"):
        ServingConfig.from_dict(
            {"model_name": "m", "artifact": "/m.gguf", "task": "text-generation", "drain_timeout_s": drain}
        )


K8S = "deploy:\n  target: kubernetes\n  registry: localhost:5000\n"


def test_kubernetes_pods_request_and_limit_the_need_and_wait_for_the_drain(chat_folder: Path) -> None:
    """The same needs on the Kubernetes target: memory requested and limited, a written limit below it a
    located error, the grace period covering the preStop delay and the drain."""
    from iac.deploy.targets.kubernetes.settings import grace_period_s, pod_resources

    spec = load_resolved(write_spec(chat_folder, SERVING + K8S))
    assert pod_resources(spec, NEEDS) == {
        "requests": {"cpu": "250m", "memory": "300Mi"},
        "limits": {"cpu": "1", "memory": "300Mi"},
    }
    assert pod_resources(spec, None)["limits"] == {"cpu": "1", "memory": "512Mi"}  # no needs: the defaults
    assert (grace_period_s(NEEDS), grace_period_s(None)) == (5 + 40 + 6, 5 + 9 + 6)
    written = "  resources:\n    requests: {cpu: 100m, memory: 128Mi}\n    limits: {cpu: '1', memory: 2Gi}\n"
    assert pod_resources(load_resolved(write_spec(chat_folder, SERVING + K8S + written)), NEEDS)["limits"] == {
        "cpu": "1",
        "memory": "2Gi",
    }
    requested = "  resources:\n    requests: {cpu: 100m, memory: 400Mi}\n"  # a written request stays
    assert pod_resources(load_resolved(write_spec(chat_folder, SERVING + K8S + requested)), NEEDS) == {
        "requests": {"cpu": "100m", "memory": "400Mi"},
        "limits": {"cpu": "1", "memory": "400Mi"},
    }
    low = load_resolved(write_spec(chat_folder, SERVING + K8S + written.replace("2Gi", "256Mi")))
    with pytest.raises(UserError) as info:
        pod_resources(low, NEEDS)
    [problem] = info.value.problems
    assert problem.path == "deploy.resources.limits.memory" and "at least 300Mi" in problem.fix


def test_the_proxy_waits_for_the_models_longest_request() -> None:
    from iac.build.proxy_config import nginx_conf
    from iac.deploy.needs import read_timeout_s

    # nginx's default for a model with no long requests; for a family that states needs the longest drain
    # any family states, whatever this version's own (so a rolled-back candidate's figure never stays).
    assert (read_timeout_s(None), read_timeout_s(NEEDS)) == (60, 600)
    assert read_timeout_s(ServingNeeds(memory_bytes=MIB, memory_detail="", drain_s=240.5)) == 600
    conf = nginx_conf("chat", 2, grpc=True, read_timeout_s=600)
    assert "proxy_read_timeout 600s;" in conf and "grpc_read_timeout 600s;" in conf
    assert "proxy_read_timeout 10s;" in conf  # the shadow copy's wait is its own

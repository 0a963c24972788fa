"""serving.json for task text-generation: the family's knobs, their defaults and bounds, and what the
family refuses (checked without loading llama.cpp)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from serving.config import ServingConfig


def config(**fields: Any) -> dict[str, Any]:
    return {"model_name": "chat", "artifact": "/models/chat.gguf", "task": "text-generation", **fields}


def test_defaults() -> None:
    loaded = ServingConfig.from_dict(config())
    assert (loaded.max_sequences, loaded.max_queued_sequences, loaded.context_length) == (4, 64, 0)
    loaded = ServingConfig.from_dict(config(max_sequences=8, max_queued_sequences=0, context_length=2048))
    assert (loaded.max_sequences, loaded.max_queued_sequences, loaded.context_length) == (8, 0, 2048)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"max_sequences": 0}, "max_sequences"),
        ({"max_sequences": "8"}, "max_sequences"),
        ({"max_queued_sequences": -1}, "max_queued_sequences"),
        ({"context_length": 1.5}, "context_length"),
        ({"inputs": [{"name": "x", "shape": [1], "dtype": "string"}]}, "inputs"),
        ({"artifact": "/models/model.onnx"}, "artifact"),
        ({"max_batch_size": 8}, "max_batch_size"),
        ({"cpu_wait": "busy"}, "cpu_wait"),
    ],
)
def test_bad_fields_are_named(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"serving config: {field}: "):
        ServingConfig.from_dict(config(**fields))


def test_threads_spin_only_with_a_cpu_to_spare(tmp_path: Path) -> None:
    """`auto` spins when the replica may use more CPUs than its threads: pinned CPUs, capped by the
    cgroup's quota (a Kubernetes CPU limit of 2 is "200000 100000")."""
    from serving.generate.cpu_wait import resolve, usable_cpus

    assert ServingConfig.from_dict(config()).cpu_wait == "auto"
    assert (resolve("auto", 2, cpus=2.0), resolve("auto", 2, cpus=3.0), resolve("auto", 1, cpus=1.5)) == (
        "sleep",
        "spin",
        "sleep",
    )
    assert (resolve("spin", 8, cpus=1.0), resolve("sleep", 1, cpus=64.0)) == ("spin", "sleep")
    cpu_max = tmp_path / "cpu.max"
    cpu_max.write_text("150000 100000\n")
    assert usable_cpus(cpu_max) == min(1.5, len(os.sched_getaffinity(0)))
    cpu_max.write_text("max 100000\n")
    assert usable_cpus(cpu_max) == len(os.sched_getaffinity(0))

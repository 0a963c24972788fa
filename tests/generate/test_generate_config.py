"""serving.json for task text-generation: the family's knobs, their defaults and bounds, and what the
family refuses (checked without loading llama.cpp)."""

from __future__ import annotations

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
    ],
)
def test_bad_fields_are_named(fields: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=rf"serving config: {field}: "):
        ServingConfig.from_dict(config(**fields))

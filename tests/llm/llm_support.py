"""What the llm tests share beyond fixtures: the spec of a stack around the tiny model."""

from __future__ import annotations

from pathlib import Path

from harness.specs import CHAT_MODEL

SPEC = CHAT_MODEL  # the model and data; a test adds the sections it is about


def write_spec(folder: Path, extra: str = "") -> Path:
    path = folder / "model.yaml"
    path.write_text(SPEC + extra)
    return path

"""What the llm tests share beyond fixtures: the spec of a stack around the tiny model."""

from __future__ import annotations

from pathlib import Path

SPEC = """\
name: chat
model:
  path: model/tiny.gguf
data:
  calibration: data/evaluation.txt
  evaluation: data/evaluation.txt
"""


def write_spec(folder: Path, extra: str = "") -> Path:
    path = folder / "model.yaml"
    path.write_text(SPEC + extra)
    return path

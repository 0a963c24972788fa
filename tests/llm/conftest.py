"""The llm family's fixtures: the tiny random Llama GGUF (written once per session, no download) and a
stack folder around it with the committed evaluation prose."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from modelprep.examples.smollm import TEXT
from modelprep.families.llm import tiny


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny.build(tmp_path_factory.mktemp("tiny-llm") / "tiny.gguf")


@pytest.fixture()
def chat_folder(tmp_path: Path, tiny_gguf: Path) -> Path:
    """A folder like stacks/smollm with the tiny model; write model.yaml with `write_spec`."""
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tiny.gguf").symlink_to(tiny_gguf)
    (tmp_path / "data").mkdir()
    shutil.copyfile(TEXT, tmp_path / "data" / "evaluation.txt")
    return tmp_path

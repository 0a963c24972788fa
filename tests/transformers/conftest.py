"""Fixtures for text models: a tiny BERT built locally in Hugging Face format and a spec folder around it."""

from __future__ import annotations

from pathlib import Path

import pytest
from text_support import sentences

EMBEDDING_SPEC = """\
name: tiny-text
model:
  path: model
  task: sentence-embedding
  inputs:
    - name: text
      dtype: string
      tokenizer:
        max_length: 64
data:
  calibration: texts.txt
  evaluation: texts.txt
optimize:
  min_cosine: 0.9
  max_accuracy_drop: 0.05
serving:
  max_batch_size: 16
"""


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelprep.families.huggingface import tiny

    return tiny.build(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modelprep.families.huggingface import tiny

    return tiny.build(
        tmp_path_factory.mktemp("tiny-classifier") / "model", labels=["negative", "neutral", "positive"], seed=3
    )


@pytest.fixture(scope="session")
def embedding_stack(tmp_path_factory: pytest.TempPathFactory, tiny_bert: Path) -> Path:
    import shutil

    folder = tmp_path_factory.mktemp("tiny-text-stack")
    shutil.copytree(tiny_bert, folder / "model")
    (folder / "texts.txt").write_text("\n".join(sentences(200)) + "\n")
    (folder / "model.yaml").write_text(EMBEDDING_SPEC)
    return folder / "model.yaml"

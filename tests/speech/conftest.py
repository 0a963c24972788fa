"""Fixtures for the speech tests: Whisper tiny.en, espeak-ng clips, one running speech server."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from speech_support import SENTENCE, RunningServer, config_for, model_dir, running, speak


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests here that need the model or the synthesisers get marker `speech` (left out of test-fast)."""
    here = Path(__file__).resolve().parent
    for item in items:
        path = Path(str(item.fspath)).resolve()
        if path.parent == here and path.name != "test_speech_units.py":
            item.add_marker(pytest.mark.speech)


@pytest.fixture(scope="session")
def whisper_dir() -> Path:
    return model_dir()


@pytest.fixture(scope="session")
def sentence_audio() -> np.ndarray:
    return speak(SENTENCE)


@pytest.fixture(scope="session")
def speech_server(whisper_dir: Path) -> Iterator[RunningServer]:
    with running(config_for(whisper_dir, max_audio_seconds=150.0, max_body_bytes=6 * 1024 * 1024)) as server:
        yield server

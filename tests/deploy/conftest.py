"""Fixtures of the deploy tests: a fake docker client behind the providers, no waiting, a tiny spec folder."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from fake_docker import FakeDocker

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_docker(monkeypatch: pytest.MonkeyPatch) -> FakeDocker:
    """Every provider's `docker_client()` returns this in-memory client for the test."""
    from iac.deploy import dynamic
    from iac.deploy.targets.docker import collisions

    fake = FakeDocker()
    monkeypatch.setattr(dynamic, "client_factory", lambda: fake)
    # This host's real ports belong to whatever else runs here; the fake engine's host has only its own.
    monkeypatch.setattr(collisions, "host_port_free", lambda _address, port: port not in fake.host_ports_in_use)
    return fake


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """time.sleep returns at once; the seconds asked for are recorded."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


@pytest.fixture
def spec_folder(tmp_path: Path) -> Path:
    """The pristine digits spec beside placeholder model and data files: enough to load and hash
    it (preview's work), not to prep it."""
    folder = tmp_path / "digits"
    (folder / "model").mkdir(parents=True)
    (folder / "data").mkdir()
    shutil.copy(REPO / "modelprep" / "examples" / "specs" / "digits.yaml", folder / "model.yaml")
    (folder / "model" / "digits.keras").write_bytes(b"placeholder: never loaded by these tests")
    np.savez(folder / "data" / "calibration.npz", x=np.zeros((4, 64), np.float32))
    np.savez(folder / "data" / "evaluation.npz", x=np.zeros((4, 64), np.float32), y=np.zeros(4, np.int64))
    return folder

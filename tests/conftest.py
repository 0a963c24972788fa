"""Shared fixtures: a trained digits example from the pristine example spec, an isolated prep cache,
and the no-skip rule. Tests never read stacks/*/model.yaml: the README tells users to edit those."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_SPECS = REPO / "modelprep" / "examples" / "specs"


def pytest_configure(config: pytest.Config) -> None:
    # Tests never touch the user's cache, whatever the shell exports.
    os.environ["MODELSTACK_CACHE"] = str(Path(config.rootpath) / ".cache" / "test-prep")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test would hide missing Docker or Pulumi in CI: count skips as failures."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter else 0
    if skipped and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter:
            reporter.write_line(f"FAILED: {skipped} test(s) skipped; every test must run (see .ci/run)", red=True)


@pytest.fixture(scope="session")
def digits_example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder like stacks/digits with a freshly trained model and its data files."""
    from modelprep.examples.digits import train

    folder = tmp_path_factory.mktemp("digits")
    shutil.copy(EXAMPLE_SPECS / "digits.yaml", folder / "model.yaml")
    train(folder)
    return folder

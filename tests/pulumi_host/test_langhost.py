"""The real Pulumi engine drives a Python project through our language host (iac.pulumi_host.langhost).

A throwaway project (tests/fixtures/pulumi_langhost) with a local file backend reads stack
config (one plain, one secret value), manages a text file through a dynamic provider defined
in an importable module, and exports outputs. The test walks it through preview, up, an input
change, stack output, refresh and destroy, and checks that a failing program produces a
readable error and a non-zero exit instead of a hang.

Needs `.tools/bin/pulumi` and the plugin wrappers from `scripts/pulumi_plugins.sh`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO / ".tools" / "bin"
PULUMI = TOOLS_BIN / "pulumi"
PLUGINS = ("pulumi-language-python", "pulumi-resource-pulumi-python")
FIXTURE = REPO / "tests" / "fixtures" / "pulumi_langhost"
# One engine command takes 1-3 s here; the bound only turns a hang into a failure.
COMMAND_TIMEOUT_S = 60

pytestmark = [pytest.mark.pulumi, pytest.mark.timeout(180)]


def _require_tools() -> None:
    # A missing CLI is a broken setup, not an optional feature: fail loudly.
    if not os.access(PULUMI, os.X_OK):
        pytest.fail(f"Pulumi CLI not found at {PULUMI}; build it with the project's setup first")
    for name in PLUGINS:
        if not os.access(TOOLS_BIN / name, os.X_OK):
            pytest.fail(f"{TOOLS_BIN / name} missing; run scripts/pulumi_plugins.sh")


@dataclass
class Project:
    """A Pulumi project in a temp dir, with a hermetic PULUMI_HOME and file backend."""

    root: Path
    env: dict[str, str]

    def pulumi(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(PULUMI), *args, "--non-interactive", "--color", "never"],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
        if ok and proc.returncode != 0:
            pytest.fail(
                f"pulumi {' '.join(args)} exited {proc.returncode}\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc

    def outputs(self, *extra: str) -> dict[str, Any]:
        return json.loads(self.pulumi("stack", "output", "--json", *extra).stdout)

    def resource_outputs(self, type_: str) -> dict[str, Any] | None:
        """Outputs recorded in the state for the one resource of `type_`, or None."""
        state = json.loads(self.pulumi("stack", "export").stdout)
        for resource in state["deployment"].get("resources") or []:
            if resource["type"] == type_:
                return resource.get("outputs", {})
        return None


@pytest.fixture
def project(tmp_path: Path) -> Project:
    _require_tools()
    root = tmp_path / "project"
    shutil.copytree(FIXTURE, root, ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "state").mkdir()
    (root / "Pulumi.yaml").write_text(
        f"name: langhost-fixture\nruntime: python\nbackend:\n  url: file://{tmp_path / 'state'}\n"
    )
    env = dict(os.environ)
    env.update(
        PATH=f"{TOOLS_BIN}{os.pathsep}{env.get('PATH', '')}",
        PULUMI_HOME=str(tmp_path / "pulumi-home"),
        PULUMI_CONFIG_PASSPHRASE="langhost-test",
        PULUMI_SKIP_UPDATE_CHECK="1",
    )
    proj = Project(root=root, env=env)
    proj.pulumi("stack", "init", "dev")
    proj.pulumi("config", "set", "greeting", "hi")
    proj.pulumi("config", "set", "--secret", "token", "s3cr3t")
    return proj


DYNAMIC = "pulumi-python:dynamic:Resource"


def test_lifecycle_through_the_python_language_host(project: Project) -> None:
    target = project.root / "greeting.txt"

    preview = project.pulumi("preview", "--diff")
    assert "+ 2 to create" in preview.stdout
    assert '"hi, world"' in preview.stdout
    # The program's own stdout reaches the user (the CLI relays it on its stderr in previews).
    assert "fixture program: greeting=hi" in preview.stdout + preview.stderr
    assert not target.exists(), "a preview must not run the provider's create"

    project.pulumi("up", "--yes")
    assert target.read_text() == "hi, world"

    project.pulumi("config", "set", "greeting", "hello")
    preview = project.pulumi("preview", "--diff")
    assert "~ 1 to update" in preview.stdout
    assert '"hi, world" => "hello, world"' in preview.stdout
    assert target.read_text() == "hi, world"

    project.pulumi("up", "--yes")
    assert target.read_text() == "hello, world"

    outputs = project.outputs()
    assert outputs["greeting"] == "hello"
    assert outputs["content"] == "hello, world"
    assert outputs["path"] == str(target)
    assert outputs["token"] == "[secret]", "secret config must stay secret in outputs"
    revealed = project.outputs("--show-secrets")
    assert (revealed["token"], revealed["token_length"]) == ("s3cr3t", 6)

    target.write_text("drifted")
    project.pulumi("refresh", "--yes")
    refreshed = project.resource_outputs(DYNAMIC) or {}
    assert refreshed.get("content") == "drifted", "refresh should record the file's drift"

    project.pulumi("destroy", "--yes")
    assert not target.exists()
    assert project.resource_outputs(DYNAMIC) is None


def test_failing_program_reports_a_readable_error(project: Project) -> None:
    project.pulumi("config", "set", "fail", "true")

    proc = project.pulumi("up", "--yes", ok=False)

    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "Program failed with an unhandled exception" in output
    assert "RuntimeError: fixture program failed on purpose" in output
    assert "__main__.py" in output
    assert "langhost_exec" not in output, "runner frames should be trimmed from the traceback"
    assert not (project.root / "greeting.txt").exists()

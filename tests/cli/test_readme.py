"""The README's commands exist: every `modelstack <command>` and `make <target>` it shows."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from iac.cli.app import app

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def test_every_modelstack_command_in_the_readme_exists() -> None:
    commands = set(re.findall(r"^\s*modelstack (\w+)", README, flags=re.MULTILINE))
    commands |= set(re.findall(r"`modelstack (\w+)", README))
    assert {"validate", "prep", "render", "status", "diff"} <= commands
    # One real `modelstack` process (the entry point itself), then every command in this process: a
    # process each cost ~0.4 s of CPU for nothing more (issue 18).
    run = subprocess.run([sys.executable, "-m", "iac.cli.app", "--help"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    for command in sorted(commands):
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0, f"`modelstack {command}` in the README does not exist: {result.output}"


def test_every_make_target_in_the_readme_exists() -> None:
    targets = set(re.findall(r"^make (\w+)", README, flags=re.MULTILINE)) | set(re.findall(r"`make (\w+)`", README))
    assert {"demo", "test"} <= targets
    makefile = (REPO / "Makefile").read_text()
    for target in targets:
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE), f"make {target} is not in the Makefile"


def test_the_readme_opens_with_the_spec_and_its_fields_exist() -> None:
    from iac.spec.models import ModelSpec

    example = README.split("```yaml", 1)[1].split("```", 1)[0]
    assert README.index("```yaml") < README.index("make demo")
    # The example as shipped: stacks/digits/model.yaml starts as this copy and is the user's to edit.
    spec_file = (REPO / "modelprep" / "examples" / "specs" / "digits.yaml").read_text()
    assert yaml.safe_load(example) == yaml.safe_load(spec_file), "the README shows the digits example spec"
    assert set(ModelSpec.model_fields) <= set(re.findall(r"^(\w+):", example, flags=re.MULTILINE))

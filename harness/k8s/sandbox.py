"""A throwaway digits stack pointed at a Kubernetes cluster, driven through the real Pulumi CLI (tests,
`make k8s-demo`, the scale benchmark). Like `harness.sandbox.Sandbox`: its own project folder,
file-backend state and passphrase, the pristine example spec with its deploy section set here, and
PULUMI_HOME where scripts/k8s_tools.sh installed the pulumi-kubernetes plugin."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from harness.sandbox import CALLER_ONLY, EXAMPLE_SPEC, PASSPHRASE, PULUMI, STACK_FILES

REPO = Path(__file__).resolve().parents[2]
PULUMI_HOME = REPO / ".tools" / "pulumi-home"


class K8sSandbox:
    """`root/digits` (the project), `root/state` (its backend); `init()` first, `destroy()` last."""

    def __init__(self, root: Path, example: Path, deploy: dict[str, Any], **changes: Any) -> None:
        if not PULUMI.is_file():
            raise RuntimeError(f"{PULUMI} is missing: run `make setup` (scripts/pulumi_cli.sh)")
        self.dir = root / "digits"
        self.dir.mkdir(parents=True)
        for name in ("Pulumi.yaml", "__main__.py"):
            shutil.copy(STACK_FILES / name, self.dir / name)
        for sub in ("model", "data"):
            shutil.copytree(example / sub, self.dir / sub)
        (root / "state").mkdir()
        project = (self.dir / "Pulumi.yaml").read_text().replace("file://./.pulumi-state", f"file://{root / 'state'}")
        (self.dir / "Pulumi.yaml").write_text(project)
        self.name = f"k{uuid.uuid4().hex[:8]}"
        self.write_spec(deploy, **changes)
        inherited = {k: v for k, v in os.environ.items() if k not in CALLER_ONLY}
        self.env = {
            **inherited,
            "PATH": f"{PULUMI.parent}:{os.environ.get('PATH', '')}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_HOME": str(PULUMI_HOME),
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_DIY_BACKEND_NO_LEGACY_WARNING": "true",
        }

    @property
    def spec_path(self) -> Path:
        return self.dir / "model.yaml"

    def spec(self) -> dict[str, Any]:
        return yaml.safe_load(self.spec_path.read_text())

    def write_spec(self, deploy: dict[str, Any] | None = None, **changes: Any) -> None:
        """The example spec with `deploy` (and top-level sections in `changes`) replaced."""
        doc = yaml.safe_load(EXAMPLE_SPEC.read_text()) if not self.spec_path.exists() else self.spec()
        if deploy is not None:
            doc["deploy"] = deploy
        doc.update(changes)
        self.spec_path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def edit_kubernetes(self, **settings: Any) -> None:
        """Change the deploy section's settings (None removes one)."""
        doc = self.spec()
        k = doc["deploy"]
        for key, value in settings.items():
            if value is None:
                k.pop(key, None)
            else:
                k[key] = value
        self.spec_path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def init(self) -> None:
        self.pulumi("stack", "init", self.name)

    @contextlib.contextmanager
    def deployed(self) -> Iterator[K8sSandbox]:
        """`init` and `up` on entry; `destroy` on exit (what a test's stack fixture does)."""
        self.init()
        try:
            self.up()
            yield self
        finally:
            self.destroy()

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(
            [str(PULUMI), *args, "--non-interactive", "--color", "never"],
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and run.returncode != 0:
            raise RuntimeError(f"pulumi {' '.join(args)} failed:\n{run.stdout[-5000:]}\n{run.stderr[-3000:]}")
        return run

    def pulumi(self, *args: str, timeout: float = 900) -> str:
        return self.run(*args, timeout=timeout).stdout

    def up(self, timeout: float = 900) -> str:
        return self.pulumi("up", "--yes", "--skip-preview", "--suppress-progress", timeout=timeout)

    def destroy(self) -> str:
        return self.pulumi("destroy", "--yes", "--suppress-progress")

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.pulumi("stack", "output", "--json"))

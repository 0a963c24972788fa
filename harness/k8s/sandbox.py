"""A throwaway stack (digits unless told) pointed at a Kubernetes cluster, driven through the real Pulumi CLI (tests,
`make k8s-demo`, the scale benchmark). A `harness.sandbox.Project`, as `Sandbox` is: its own project
folder, file-backend state and passphrase; here the pristine example spec with its deploy section set,
and PULUMI_HOME where scripts/k8s_tools.sh installed the pulumi-kubernetes plugin."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from harness.sandbox import EXAMPLE_SPEC, Project

REPO = Path(__file__).resolve().parents[2]
PULUMI_HOME = REPO / ".tools" / "pulumi-home"


class K8sSandbox(Project):
    """`root/digits` (the project), `root/state` (its backend); `init()` first, `destroy()` last."""

    timeout = 900.0  # a cluster's rollout: image pushes, pods scheduled

    def __init__(
        self, root: Path, example: Path, deploy: dict[str, Any], spec: Path = EXAMPLE_SPEC, **changes: Any
    ) -> None:
        """`spec`: the spec whose deploy section is replaced (the digits example's unless another)."""
        self.base_spec = spec
        super().__init__(
            root,
            example,
            f"k{uuid.uuid4().hex[:8]}",
            PULUMI_HOME,
            PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION="true",
            PULUMI_DIY_BACKEND_NO_LEGACY_WARNING="true",
        )
        self.write_spec(deploy, **changes)

    @property
    def spec_path(self) -> Path:
        return self.dir / "model.yaml"

    def spec(self) -> dict[str, Any]:
        return yaml.safe_load(self.spec_path.read_text())

    def write_spec(self, deploy: dict[str, Any] | None = None, **changes: Any) -> None:
        """The example spec with `deploy` (and top-level sections in `changes`) replaced."""
        doc = yaml.safe_load(self.base_spec.read_text()) if not self.spec_path.exists() else self.spec()
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

    def up(self, timeout: float | None = None) -> str:
        return self.pulumi("up", "--yes", "--skip-preview", "--suppress-progress", timeout=timeout)

    def destroy(self) -> str:
        return self.pulumi("destroy", "--yes", "--suppress-progress")

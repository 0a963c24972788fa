"""A throwaway deployed copy of the digits stack, driven through the real Pulumi CLI, for tests and benchmarks.

A `Sandbox` is a fresh project folder with its own file-backend state, a random stack name and a
free host port: `Pulumi.yaml` and `__main__.py` come from `stacks/digits`, `model.yaml` from the
pristine example spec (`modelprep/examples/specs/digits.yaml`, never the user-editable
`stacks/digits/model.yaml`), the model and data files from a trained example folder. Another
example passes its stack folder and spec (e.g. `stacks/smollm` and a spec around the tiny GGUF); the
spec publishes `deploy.host_port: 8501`, which the sandbox replaces with a free port. The CLI runs
with an environment the sandbox sets itself (passphrase, PULUMI_HOME, backend), whatever the
caller's shell exports. `Project`, the folder and the CLI without the spec, serves
`harness.k8s.sandbox` too.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from harness.processes import free_port
from iac.deploy.dynamic import OWNER_LABEL

REPO = Path(__file__).resolve().parents[1]
PULUMI = REPO / ".tools" / "bin" / "pulumi"
STACK_FILES = REPO / "stacks" / "digits"  # Pulumi.yaml and __main__.py
EXAMPLE_SPEC = REPO / "modelprep" / "examples" / "specs" / "digits.yaml"
PASSPHRASE = "modelstack-sandbox"  # guards only the sandbox's own throwaway state
# Variables of the caller's shell that would point the CLI at other state or another secret.
CALLER_ONLY = ("PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_BACKEND_URL", "PULUMI_ACCESS_TOKEN", "PULUMI_STACK")


class Project:
    """A copy of a stack's program (the digits stack's unless `stack_files` names another) in
    `root/<project>` with the model and data files of `example`,
    its own file-backend state in `root/state`, and the pulumi CLI run there with an environment set
    here (`env` on top), whatever the caller's shell exports. `model.yaml` is the subclass's to write."""

    timeout = 600.0  # seconds a pulumi command may take, unless the call says otherwise

    def __init__(
        self, root: Path, example: Path, name: str, pulumi_home: Path, stack_files: Path = STACK_FILES, **env: str
    ) -> None:
        import yaml

        if not PULUMI.is_file():
            raise RuntimeError(f"{PULUMI} is missing: run `make setup` (scripts/pulumi_cli.sh)")
        self.project = str(yaml.safe_load((stack_files / "Pulumi.yaml").read_text())["name"])
        self.dir = root / self.project
        self.dir.mkdir(parents=True)
        for file in ("Pulumi.yaml", "__main__.py"):
            shutil.copy(stack_files / file, self.dir / file)
        for sub in ("model", "data"):
            shutil.copytree(example / sub, self.dir / sub)
        (root / "state").mkdir()
        project = (self.dir / "Pulumi.yaml").read_text().replace("file://./.pulumi-state", f"file://{root / 'state'}")
        (self.dir / "Pulumi.yaml").write_text(project)
        self.name = name  # the stack's
        inherited = {k: v for k, v in os.environ.items() if k not in CALLER_ONLY}
        self.env = {
            **inherited,
            "PATH": f"{PULUMI.parent}:{os.environ.get('PATH', '')}",
            "PULUMI_CONFIG_PASSPHRASE": PASSPHRASE,
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_HOME": str(pulumi_home),
            **env,
        }

    def command(self, *args: str) -> list[str]:
        return [str(PULUMI), *args, "--non-interactive", "--color", "never"]

    def run(self, *args: str, check: bool = True, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
        run = subprocess.run(
            self.command(*args),
            cwd=self.dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout or self.timeout,
        )
        if check and run.returncode != 0:
            raise RuntimeError(f"pulumi {' '.join(args)} failed:\n{run.stdout[-5000:]}\n{run.stderr[-3000:]}")
        return run

    def pulumi(self, *args: str, timeout: float | None = None) -> str:
        return self.run(*args, timeout=timeout).stdout

    def outputs(self) -> dict[str, Any]:
        return json.loads(self.pulumi("stack", "output", "--json"))


class Sandbox(Project):
    """`root/digits` (the project), `root/state` (its backend), `root/pulumi-home`; call `pulumi("stack",
    "init", sandbox.name)` first and `pulumi("destroy", "--yes")` last."""

    def __init__(self, root: Path, example: Path, stack_files: Path = STACK_FILES, spec: Path = EXAMPLE_SPEC) -> None:
        import yaml

        super().__init__(root, example, f"t{uuid.uuid4().hex[:8]}", root / "pulumi-home", stack_files)
        self.service = str(yaml.safe_load(spec.read_text())["name"])
        shutil.copy(spec, self.dir / "model.yaml")
        self.port = free_port()
        self.edit_spec("host_port: 8501", f"host_port: {self.port}")
        # The owner label's prefix: the label adds the stack id of the sandbox's state after an `@`.
        self.owner = f"{self.project}/{self.name}/{self.service}"
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.endpoint = f"{self.base_url}/v1/models/{self.service}:predict"

    def edit_spec(self, old: str, new: str) -> None:
        spec = self.dir / "model.yaml"
        text = spec.read_text()
        if old not in text:
            raise ValueError(f"{old!r} not in {spec}")
        spec.write_text(text.replace(old, new))

    @contextlib.contextmanager
    def deployed(self) -> Iterator[Sandbox]:
        """`stack init` and `up` on entry; `destroy` on exit, then nothing of the stack may be left."""
        self.pulumi("stack", "init", self.name)
        try:
            self.pulumi("up", "--yes", "--skip-preview")
            yield self
        finally:
            self.pulumi("destroy", "--yes")
            left = leftovers(self.owner)
            if left != {"containers": [], "networks": [], "images": []} or healers(self.owner):
                raise AssertionError(f"destroy left {left} and healers {healers(self.owner)}")

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        """Start a pulumi command in the background; its output goes to a pulumi-N.log beside the project."""
        with open(self.dir.parent / f"pulumi-{len(list(self.dir.parent.glob('pulumi-*.log')))}.log", "wb") as log:
            return subprocess.Popen(
                self.command(*args),
                cwd=self.dir,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def metadata(self) -> dict[str, Any]:
        return get(f"{self.base_url}/v1/models/{self.service}/metadata")["metadata"]["modelstack"]

    def containers(self, role: str | None = None) -> list[Any]:
        import docker

        labels = [OWNER_LABEL] + ([f"org.modelstack.role={role}"] if role else [])
        client = docker.from_env()
        # Sparse: the list's labels only, so another stack's container removed meanwhile is no error;
        # then the full record of this stack's own.
        found = []
        for listed in client.containers.list(all=True, sparse=True, filters={"label": labels}):
            if owned(listed.attrs.get("Labels"), self.owner):
                try:
                    found.append(client.containers.get(listed.id))
                except docker.errors.NotFound:
                    continue  # removed since the list: a retired replica
        return found


def post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def owned(labels: dict[str, str] | None, prefix: str) -> bool:
    """Labelled by a stack `<project>/<stack>/<service>` = `prefix`, whatever its stack id."""
    from iac.deploy.identity import owner_prefix

    label = (labels or {}).get(OWNER_LABEL)
    return label is not None and owner_prefix(label) == prefix


def leftovers(prefix: str) -> dict[str, list[str]]:
    """What the owner label (of any stack id) still finds after `destroy`: containers, networks, images."""
    import docker

    client = docker.from_env()
    label = {"label": OWNER_LABEL}
    # Sparse: the list's own fields, so another session's container removed meanwhile is no error.
    listed = [c.attrs for c in client.containers.list(all=True, sparse=True, filters=label)]
    return {
        "containers": [c["Names"][0].lstrip("/") for c in listed if owned(c.get("Labels"), prefix)],
        "networks": [n.name for n in client.networks.list(filters=label) if owned(n.attrs.get("Labels"), prefix)],
        "images": [i.id for i in client.images.list(filters=label) if owned(i.labels, prefix)],
    }


def healers(prefix: str) -> list[int]:
    """Pids of the running healers of the stack `prefix` (any stack id)."""
    from iac.deploy.identity import owner_prefix
    from iac.deploy.targets.docker.healer import DAEMON, cmdline

    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    found = []
    for pid in pids:
        args = cmdline(pid)
        if DAEMON in args and "--owner" in args[:-1] and owner_prefix(args[args.index("--owner") + 1]) == prefix:
            found.append(pid)
    return found

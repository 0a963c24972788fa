"""Stacks on one Docker Engine never touch each other (real Pulumi engine, real Docker Engine).

Two checkouts of the digits project with the same stack name: the second is refused at `preview`,
before anything is created, with one located line naming the first as the holder; its `destroy`
leaves the first serving; renamed, both serve side by side, and destroying the second leaves the
first as it was. A network of the same name made by someone else is reported and left alone.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import numpy as np
import pytest

from harness.sandbox import Sandbox, get, healers, post

pytestmark = [pytest.mark.e2e, pytest.mark.docker, pytest.mark.pulumi, pytest.mark.tf, pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def first(digits_example: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    stack = Sandbox(tmp_path_factory.mktemp("checkout-a"), digits_example)
    with stack.deployed():
        yield stack


@pytest.fixture(scope="module")
def body(digits_example: Path) -> dict:
    with np.load(digits_example / "data" / "evaluation.npz") as data:
        return {"instances": [data["x"][0].tolist()]}


def second_checkout(first: Sandbox, example: Path, root: Path) -> Sandbox:
    """A copy of the project elsewhere, with its own state, the same stack name and its own port."""
    stack = Sandbox(root, example)
    stack.name, stack.owner = first.name, first.owner
    stack.pulumi("stack", "init", stack.name)
    return stack


def fingerprint(stack: Sandbox) -> list[tuple[str, str, str]]:
    """The first stack's containers as the engine has them: name, id, status."""
    return sorted((c.name, c.id, c.status) for c in stack.containers())


def test_second_checkout_is_refused_then_runs_beside_and_its_destroy_leaves_the_first(
    first: Sandbox, body: dict, digits_example: Path, tmp_path: Path
) -> None:
    before, image = fingerprint(first), first.outputs()["image_id"]
    second = second_checkout(first, digits_example, tmp_path)
    network = f"modelstack-{first.name}-digits"

    # Same project, stack and service name: refused at preview, before anything exists.
    run = second.run("preview", check=False)
    assert run.returncode != 0
    line = re.search(r"model\.yaml:\d+: name: the network .*", run.stdout)
    assert line, run.stdout[-3000:]
    assert f"taken by network {network} of stack {first.owner}@" in line.group(0)
    assert f"(checkout {first.dir})" in line.group(0) and "give this service another name" in line.group(0)
    assert "Traceback" not in run.stdout

    # Even without a preview, `up` stops at the collision; what it made carries only its own id,
    # so its `destroy` takes nothing of the first stack's.
    assert second.run("up", "--yes", "--skip-preview", check=False).returncode != 0
    second.pulumi("destroy", "--yes")
    assert fingerprint(first) == before
    docker.from_env().images.get(image)
    assert post(first.endpoint, body)["predictions"]

    # Renamed but publishing the first stack's port: refused, naming the proxy that holds it.
    second.edit_spec("name: digits", "name: digits-b")
    second.edit_spec(f"host_port: {second.port}", f"host_port: {first.port}")
    run = second.run("preview", check=False)
    assert run.returncode != 0
    assert re.search(
        rf"model\.yaml:\d+: deploy\.host_port: port {first.port} on 127\.0\.0\.1 is taken by container "
        rf"{network}-proxy of stack {re.escape(first.owner)}@[0-9a-f]{{8}} \(checkout {re.escape(str(first.dir))}\); "
        r"set deploy\.host_port to a free port",
        run.stdout,
    ), run.stdout[-3000:]

    # Its own port: both serve side by side; destroying the second leaves the first as it was.
    second.edit_spec(f"host_port: {first.port}", f"host_port: {second.port}")
    try:
        second.pulumi("up", "--yes", "--skip-preview")
        assert post(f"{second.base_url}/v1/models/digits-b:predict", body)["predictions"]
        assert post(first.endpoint, body)["predictions"]
    finally:
        second.pulumi("destroy", "--yes")
    assert fingerprint(first) == before
    assert len(healers(first.owner)) == 1
    assert get(f"{first.base_url}/v1/models/digits/metadata")["metadata"]["modelstack"]
    assert post(first.endpoint, body)["predictions"]


def test_a_strangers_network_of_the_same_name_is_reported_and_left_alone(digits_example: Path, tmp_path: Path) -> None:
    stack = Sandbox(tmp_path, digits_example)
    stack.name = f"t{uuid.uuid4().hex[:8]}"
    client = docker.from_env()
    theirs = client.networks.create(f"modelstack-{stack.name}-digits", driver="bridge")
    try:
        stack.pulumi("stack", "init", stack.name)
        run = stack.run("preview", check=False)
        assert run.returncode != 0
        assert re.search(
            rf"model\.yaml:\d+: name: the network {theirs.name} is already taken by network "
            rf"{theirs.name} \(not made by modelstack\)",
            run.stdout,
        ), run.stdout[-3000:]
        assert stack.run("up", "--yes", "--skip-preview", check=False).returncode != 0
        client.networks.get(theirs.id)  # still there
        stack.pulumi("destroy", "--yes")
        client.networks.get(theirs.id)
    finally:
        theirs.remove()

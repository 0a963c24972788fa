"""Stacks on one Docker Engine never touch each other (real Pulumi engine, real Docker Engine).

Two checkouts of the digits project with the same stack and service name: the second, publishing
the first's port, is refused at `preview` with one located line naming the holder and the field;
on its own port both serve side by side (the second's Docker objects carry its stack id), and
destroying either leaves the other serving. A network of the same name made by someone else is
left alone.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import docker
import numpy as np
import pytest

from harness.sandbox import Sandbox, get, healers, post
from iac.deploy.dynamic import OWNER_LABEL

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


def test_second_checkout_serves_beside_the_first_and_destroying_either_leaves_the_other(
    first: Sandbox, body: dict, digits_example: Path, tmp_path: Path
) -> None:
    before, image = fingerprint(first), first.outputs()["image_id"]
    second = second_checkout(first, digits_example, tmp_path)
    network = f"modelstack-{first.name}-digits"

    # Publishing the first stack's port: refused at preview, naming the proxy that holds it.
    second.edit_spec(f"host_port: {second.port}", f"host_port: {first.port}")
    run = second.run("preview", check=False)
    assert run.returncode != 0
    assert re.search(
        rf"model\.yaml:\d+: deploy\.host_port: port {first.port} on 127\.0\.0\.1 is taken by container "
        rf"{network}-proxy of stack {re.escape(first.owner)}@[0-9a-f]{{8}} \(checkout {re.escape(str(first.dir))}\); "
        r"set deploy\.host_port to a free port",
        run.stdout,
    ), run.stdout[-3000:]
    assert "Traceback" not in run.stdout
    # Even without a preview, `up` stops at the collision; what it made carries only its own id,
    # so its `destroy` takes nothing of the first stack's.
    assert second.run("up", "--yes", "--skip-preview", check=False).returncode != 0
    second.pulumi("destroy", "--yes")
    assert fingerprint(first) == before
    docker.from_env().images.get(image)
    assert post(first.endpoint, body)["predictions"]

    # Its own port, same stack and service name: both serve side by side.
    second.edit_spec(f"host_port: {first.port}", f"host_port: {second.port}")
    second.pulumi("up", "--yes", "--skip-preview")
    try:
        assert post(second.endpoint, body)["predictions"]
        assert post(first.endpoint, body)["predictions"]
        # The owner prefix is shared, the stack id is not: two owners, disjoint containers, two healers.
        by_owner: dict[str, set[str]] = {}
        for container in second.containers():
            by_owner.setdefault(container.labels[OWNER_LABEL], set()).add(container.name)
        assert len(by_owner) == 2, by_owner
        theirs = {name for name, _, _ in before}
        (mine,) = [names for names in by_owner.values() if names != theirs]
        stack_id = next(owner for owner, names in by_owner.items() if names == mine).rsplit("@", 1)[1]
        assert all(name.startswith(f"{network}-{stack_id}-") for name in mine), mine
        assert len(healers(second.owner)) == 2
    finally:
        second.pulumi("destroy", "--yes")
    assert fingerprint(first) == before
    assert len(healers(first.owner)) == 1
    assert get(f"{first.base_url}/v1/models/digits/metadata")["metadata"]["modelstack"]
    assert post(first.endpoint, body)["predictions"]


def test_destroying_the_first_checkout_leaves_the_second_serving(
    digits_example: Path, body: dict, tmp_path: Path
) -> None:
    (tmp_path / "one").mkdir()
    one = Sandbox(tmp_path / "one", digits_example)
    one.pulumi("stack", "init", one.name)
    one.pulumi("up", "--yes", "--skip-preview")
    (tmp_path / "two").mkdir()
    two = second_checkout(one, digits_example, tmp_path / "two")
    try:
        two.pulumi("up", "--yes", "--skip-preview")
        one.pulumi("destroy", "--yes")
        assert post(two.endpoint, body)["predictions"]
        assert all(c.status == "running" for c in two.containers())
        # The plain name is free again; the second keeps the name it took (kept in its state).
        preview = json.loads(two.pulumi("preview", "--json"))
        assert {step["op"] for step in preview["steps"]} == {"same"}, preview["steps"]
    finally:
        two.pulumi("destroy", "--yes")
        one.pulumi("destroy", "--yes")


def test_a_strangers_network_of_the_same_name_is_left_alone(digits_example: Path, body: dict, tmp_path: Path) -> None:
    stack = Sandbox(tmp_path, digits_example)
    stack.name = f"t{uuid.uuid4().hex[:8]}"
    client = docker.from_env()
    theirs = client.networks.create(f"modelstack-{stack.name}-digits", driver="bridge")
    try:
        stack.pulumi("stack", "init", stack.name)
        stack.pulumi("up", "--yes", "--skip-preview")
        assert post(stack.endpoint, body)["predictions"]
        assert client.networks.get(theirs.id).attrs["Labels"] in (None, {})  # still theirs, unlabelled
        stack.pulumi("destroy", "--yes")
        client.networks.get(theirs.id)
    finally:
        stack.pulumi("destroy", "--yes")
        theirs.remove()

"""StackIdentity: one random id per stack state, never changed by later runs."""

from __future__ import annotations

import re


def test_each_stack_gets_its_own_id_and_keeps_it() -> None:
    from iac.deploy.identity import StackIdentityProvider, owner_of, owner_prefix

    first, second = StackIdentityProvider().create({}), StackIdentityProvider().create({})
    assert re.fullmatch(r"[0-9a-f]{8}", first.outs["stack_id"]) and first.id == first.outs["stack_id"]
    assert first.outs["stack_id"] != second.outs["stack_id"]  # two checkouts' first `up`s
    assert StackIdentityProvider().diff(first.id, first.outs, {"stack_id": None}).changes is False
    owner = owner_of("digits/dev/digits", first.outs["stack_id"])
    assert owner_prefix(owner) == "digits/dev/digits" == owner_prefix("digits/dev/digits")

"""Pulumi's mocks, set up afresh for one graph test (tests/deploy and tests/kubernetes)."""

from __future__ import annotations

import asyncio
from typing import Any

import pulumi


def use_mocks(mocks: pulumi.runtime.Mocks, preview: bool = False, monitor: Any = None) -> None:
    """The digits/dev stack under `mocks`. The mocks run on the thread's current event loop (a module
    before may have closed it), and a root stack made by an earlier test of this process would be
    reused, registered with its monitor: both are made anew."""
    asyncio.set_event_loop(asyncio.new_event_loop())
    pulumi.runtime.settings.reset_options()
    pulumi.runtime.set_mocks(mocks, project="digits", stack="dev", preview=preview, monitor=monitor)

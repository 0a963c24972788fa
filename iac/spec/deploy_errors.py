"""How problems in the `deploy` section are told: it is one section per target, told apart by `target`.

pydantic names the union's tag in an error's location (`deploy.kubernetes.registry`), where the user
wrote `deploy.registry`; a setting of the other target is an unknown field, which deserves to be named
as such; and the layout before targets were a union (`deploy.kubernetes.<setting>`) gets one problem
per setting saying where it moves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from iac.spec.errors import Problem
from iac.spec.models import DEPLOY_SECTIONS

Loc = tuple[str | int, ...]


def untagged(loc: Loc) -> tuple[Loc, str | None]:
    """The location as the user wrote it, and the target whose section the error is in (if any)."""
    if len(loc) >= 2 and loc[0] == "deploy" and loc[1] in DEPLOY_SECTIONS:
        return (loc[0], *loc[2:]), str(loc[1])
    return loc, None


def unknown_target(deploy: Any) -> tuple[Loc, str, str]:
    """`deploy` names no target (or is no mapping): where, the problem and the fix."""
    targets = ", ".join(DEPLOY_SECTIONS)
    if not isinstance(deploy, dict):
        return (
            ("deploy",),
            f"{deploy!r} is not a mapping of settings",
            f"write target: one of {targets}, and its settings",
        )
    target = deploy.get("target")
    shown = f'"{target}"' if isinstance(target, str) else repr(target)
    return ("deploy", "target"), f"{shown} is not supported", f"use one of {targets}"


def foreign_setting(field: str, target: str) -> tuple[str, str] | None:
    """A setting of another target written under this one: the problem and the fix; None if no target has it."""
    owners = [name for name, section in DEPLOY_SECTIONS.items() if name != target and field in section.model_fields]
    if not owners:
        return None
    own = ", ".join(name for name in DEPLOY_SECTIONS[target].model_fields if name != "target")
    return (
        f"is a setting of target {' and '.join(owners)}, not {target}",
        f"remove it, or set target: {owners[0]}; target {target} takes {own}",
    )


def moved_settings(data: dict[str, Any], where: Callable[[Loc], str]) -> list[Problem]:
    """`deploy.kubernetes.<setting>` (the layout before each target's settings sat directly under
    deploy): one problem per setting, located on its own line, naming where it goes."""
    deploy = data.get("deploy")
    if not isinstance(deploy, dict) or not isinstance(nested := deploy.get("kubernetes"), dict):
        return []
    set_target = "" if deploy.get("target") == "kubernetes" else "set target: kubernetes, "
    problems = [
        Problem(
            where(("deploy", "kubernetes", str(field))),
            f"deploy.kubernetes.{field}",
            "the kubernetes target's settings now sit directly under deploy",
            f"{set_target}move {field} up one level, to deploy.{field}, then remove the line `kubernetes:`",
        )
        for field in nested
    ]
    return problems or [
        Problem(
            where(("deploy", "kubernetes")),
            "deploy.kubernetes",
            "the kubernetes target's settings now sit directly under deploy",
            f"{set_target}write them under deploy and remove the line `kubernetes:`",
        )
    ]

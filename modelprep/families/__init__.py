"""The model families prep knows: one package per family, imported only when a spec names it.

`FAMILIES` maps a family's name to the module that exposes its `FAMILY` (see `modelprep.family`),
imported by `family(name)` only when a spec names it;
`FORMATS` maps the spec's `model.format` (as written, or inferred from the model's files) to the
family that loads it. A new family adds one line to each and nothing anywhere else.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from iac.spec.models import ResolvedSpec
    from modelprep.family import Family, ServingNeeds
    from modelprep.report import PrepReport

FAMILIES: dict[str, str] = {
    "keras": "modelprep.families.keras.family",
    "huggingface": "modelprep.families.huggingface.family",
    "speech": "modelprep.families.speech",
    "llm": "modelprep.families.llm.family",
}
FORMATS: dict[str, str] = {
    "keras": "keras",
    "huggingface": "huggingface",
    "ctranslate2": "speech",
    "gguf": "llm",
}


def family(name: str) -> Family:
    """The family registered as `name` (its package is imported now, not before)."""
    try:
        module = FAMILIES[name]
    except KeyError:
        raise KeyError(f"no model family {name!r}; known: {', '.join(FAMILIES)}") from None
    return cast("Family", importlib.import_module(module).FAMILY)


def family_of_format(model_format: str) -> Family:
    """The family that loads models of `model_format` (the spec's model.format)."""
    try:
        return family(FORMATS[model_format])
    except KeyError:
        raise KeyError(f"no model family loads format {model_format!r}; known: {', '.join(FORMATS)}") from None


def serving_needs(spec: ResolvedSpec, report: PrepReport, artifact: str | Path) -> ServingNeeds | None:
    """What a replica needs to serve `report`'s chosen variant (its family's optional `serving_needs`),
    or None when the family leaves the spec's limits as they are."""
    hook = getattr(family_of_format(spec.model_format.value), "serving_needs", None)
    return None if hook is None else cast("ServingNeeds", hook(spec, report, Path(artifact)))

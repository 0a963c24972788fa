"""The prep stage's input and its content keys: the spec's optimize section plus what prep needs resolved.

`PrepRequest` (modelprep.request_model) is frozen plain data (it travels through Pulumi state as JSON). The keys hash
bytes and settings, never paths, and run no TensorFlow, so `pulumi preview` can compute them.
One key scheme serves every family (`modelprep.families`): the result's key, the baseline's
and each variant's; what is particular to a family enters as its `family_settings` and its
`variant_settings`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from iac.spec.errors import Problem, UserError
from iac.spec.models import Locations, Metric, Optimize, ResolvedSpec
from modelprep.hashing import file_sha256, json_sha256
from modelprep.request_model import PrepRequest

if TYPE_CHECKING:
    from modelprep.family import Family, Variant

__all__ = [
    "PrepRequest",
    "baseline_key",
    "canon",
    "data_hashes",
    "prep_key",
    "prep_request",
    "refuse_ignored",
    "step_key",
    "variant_key",
]

# Bump when building or measuring changes, so cached variants and baselines are rebuilt.
PREP_VERSION = 3
# Bump when the report's shape changes: the results are rebuilt from the cached variants.
REPORT_VERSION = 3


def prep_request(spec: ResolvedSpec, all_variants: bool = False) -> PrepRequest:
    """The prep request of a resolved spec, made by the family that loads its format; an optimize
    field the family does not honour is refused at its line."""
    from modelprep.families import FORMATS, family_of_format

    if spec.model_format.value not in FORMATS:
        raise UserError.single(
            spec.where("model.path"),
            "model.path",
            f"no model family prep knows loads a {spec.model_format.value} model yet",
            f"use a model of one of these formats: {', '.join(FORMATS)}",
        )
    family = family_of_format(spec.model_format.value)
    refuse_ignored(spec.spec.optimize, family, spec.locations)
    req = family.request(spec, all_variants)
    # The registry chose the family: the request names it, whatever the family's own code set.
    return req if req.family == family.name else req.changed(family=family.name)


def refuse_ignored(optimize: Optimize, family: Family, locations: Locations) -> None:
    """A UserError for every optimize field set (to other than its default) that `family` does not
    read: silently ignoring it would serve a model the user did not ask for."""
    takes = ", ".join(family.catalogue)
    problems = [
        Problem(
            locations.where(f"optimize.{name}"),
            f"optimize.{name}",
            f"a {family.name} model takes optimize.variants ({takes})",
            f"remove optimize.{name}: prep would ignore it",
        )
        for name, info in Optimize.model_fields.items()
        if name not in family.honours and getattr(optimize, name) != info.get_default(call_default_factory=True)
    ]
    if problems:
        raise UserError(problems)


def prep_key(req: PrepRequest) -> str:
    """Content address of the result: the bytes of every input plus the settings."""
    return json_sha256(
        {"version": PREP_VERSION, "report": REPORT_VERSION, **data_hashes(req), "settings": _settings(req)}
    )


def data_hashes(req: PrepRequest) -> dict[str, str | None]:
    return {
        "model": file_sha256(req.model_path),
        "calibration": file_sha256(req.calibration_path),
        "evaluation": file_sha256(req.evaluation_path),
        "fine_tuning": file_sha256(req.fine_tuning_path) if req.fine_tuning_path else None,
    }


def variant_key(req: PrepRequest, variant: Variant, hashes: dict[str, str | None], settings: dict[str, Any]) -> str:
    """Content address of one measured variant: what makes it (`settings`, from its family) and
    how it is judged, nothing about the choice, so a changed objective or gate re-measures nothing."""
    o = req.optimize
    return json_sha256(
        {
            "version": PREP_VERSION,
            "variant": variant.name,
            "data": hashes
            if variant.uses_fine_tuning_data
            else {k: v for k, v in hashes.items() if k != "fine_tuning"},
            "settings": canon(settings),
            "metric": o.metric.value,
            "top_k": _top_k(o),
            "threads": req.threads,
            "input": [req.input_name, list(req.sample_shape)],
            **({} if req.inputs is None else {"inputs": canon(req.inputs)}),
            **({"family_settings": canon(req.family_settings)} if req.family_settings else {}),
        }
    )


def baseline_key(
    req: PrepRequest, hashes: dict[str, str | None], baseline: str, settings: dict[str, Any] | None = None
) -> str:
    """Content address of the float model's measures (`baseline` names what measures it; `settings`,
    the family's, what else the measuring reads, e.g. how many tokens a language model is scored on)."""
    o = req.optimize
    return json_sha256(
        {
            "version": PREP_VERSION,
            "baseline": baseline,
            "model": hashes["model"],
            "evaluation": hashes["evaluation"],
            "metric": o.metric.value,
            "top_k": _top_k(o),
            "threads": req.threads,
            **({"family_settings": canon(req.family_settings)} if req.family_settings else {}),
            **({"settings": canon(settings)} if settings else {}),
        }
    )


def step_key(req: PrepRequest, hashes: dict[str, str | None], step: str) -> str:
    """Content address of a family's shared intermediate step (e.g. one export several variants
    start from): the model's bytes, the family's settings and the step's name."""
    return json_sha256(
        {
            "version": PREP_VERSION,
            "family": req.family,
            "step": step,
            "model": hashes["model"],
            "family_settings": canon(req.family_settings),
        }
    )


def _top_k(o: Optimize) -> int | None:
    return o.top_k if o.metric == Metric.top_k else None


# Request fields that are not settings: paths (their bytes are keyed instead) and how long to time.
_NOT_SETTINGS = {
    "model_path",
    "calibration_path",
    "evaluation_path",
    "fine_tuning_path",
    "latency_budget_s",
    "locations",
}


def _settings(req: PrepRequest) -> dict[str, Any]:
    """Every setting of the request, so a field a family adds is part of the result's key without a
    line here; fine_tuning_data is a path (its bytes are keyed)."""
    data = req.model_dump(mode="json", exclude=_NOT_SETTINGS)
    data["optimize"].pop("fine_tuning_data", None)
    settings: dict[str, Any] = canon(data)
    return settings


def canon(value: Any) -> Any:
    """JSON-stable form: tuples as lists, integral floats as ints (1.0 and 1 hash alike), and
    no None values (a missing field means its default)."""
    if isinstance(value, dict):
        return {k: canon(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value

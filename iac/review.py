"""`modelstack diff`: what changes in the served model if the edited spec is rolled out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iac.service_client import served_metadata
from iac.spec.models import ResolvedSpec
from modelprep.report import TensorSignature, signature_text


@dataclass(frozen=True)
class ModelChange:
    field: str
    deployed: str
    edited: str

    @property
    def changed(self) -> bool:
        return self.deployed != self.edited


def model_diff(spec: ResolvedSpec) -> tuple[list[ModelChange], str | None]:
    """What changes in the model if this spec is rolled out; (changes, None), or ([], why not)."""
    from pydantic import ValidationError

    from iac.deploy.targets import target_of
    from modelprep.prep import cached_result
    from modelprep.report import ServedModel
    from modelprep.request import prep_request

    cached = cached_result(prep_request(spec))
    if cached is None:
        return [], f"no prep result is cached for this spec yet: run `modelstack prep {spec.spec_file}` first"
    metadata = served_metadata(target_of(spec).base_url(spec), spec) or {}
    try:
        deployed: ServedModel | None = ServedModel.model_validate(metadata.get("modelstack"))
    except ValidationError:  # nothing deployed, or a server that does not say
        deployed = None
    edited = cached.report.served()
    rows: list[tuple[str, Any, Any]] = [
        ("variant", deployed and deployed.variant, edited.variant),
        ("quantization", deployed and deployed.quantization, edited.quantization),
        ("artifact bytes", deployed and deployed.size_bytes, edited.size_bytes),
        ("accuracy", deployed and deployed.accuracy, edited.accuracy),
        ("artifact sha256", deployed and deployed.artifact_sha256[:12], edited.artifact_sha256[:12]),
        ("input signature", _signature(deployed.inputs if deployed else None), _signature(edited.inputs)),
        ("output signature", _signature(deployed.outputs if deployed else None), _signature(edited.outputs)),
    ]
    return [ModelChange(name, _cell(old), _cell(new)) for name, old, new in rows], None


def _signature(tensors: list[TensorSignature] | None) -> str | None:
    """Both sides as the report writes them (a server built before reports kept it says nothing)."""
    return None if tensors is None else signature_text(tensors)


def _cell(value: Any) -> str:
    return "—" if value is None else str(value)

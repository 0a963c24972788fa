"""`modelstack diff`: what changes in the served model if the edited spec is rolled out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from iac.service_client import served_metadata
from iac.spec.models import ResolvedSpec
from modelprep.report import PrepReport, TensorSignature, signature_text


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


PREP_NEEDED = "prep needed"  # what preview shows for the model when the edited spec's prep is not cached


def signature_of(spec: ResolvedSpec) -> str:
    """`pixels[64]:float32`: sorted by name, as the served signature is read back (TF Serving's inputs
    are a mapping)."""
    return ", ".join(
        f"{t.name}{list(t.shape or [])}:{t.dtype.value}" for t in sorted(spec.inputs, key=lambda t: t.name)
    )


def model_fields(report: PrepReport, spec: ResolvedSpec) -> dict[str, Any]:
    """The model as `pulumi preview --diff` shows it beside the infrastructure: flat, short, readable."""
    return {
        "variant": report.variant,
        "bytes": report.size_bytes,
        report.metric.value: round(report.accuracy, 4),
        "signature": signature_of(spec),
        "latency_p99_us": round(report.latency_p99_us, 1),
        "sha256": report.artifact_sha256[:12],
    }


def rollout_plan(spec: ResolvedSpec) -> str:
    """`canary: 10% for 30 s, 50% for 30 s, then 100%; judged on ...`: how the new version will replace the old."""
    rollout = spec.spec.deploy.rollout
    if rollout.strategy == "rolling":
        return "rolling: the new replicas start, take every request once ready, the old ones drain"
    a = rollout.analysis
    share = "copied" if rollout.strategy == "shadow" else ""
    steps = ", ".join(f"{s.weight}%{' ' + share if share else ''} for {s.hold:g} s" for s in rollout.steps)
    agreement = {
        "cosine": f"cosine >= {a.min_cosine if a.min_cosine is not None else '2 x prep cosine - 1'}",
        "mae": f"MAE <= {a.max_mae if a.max_mae is not None else '2 x prep MAE'}",
    }.get(
        spec.spec.optimize.metric.value,
        f"top-1 agreement >= {a.min_agreement if a.min_agreement is not None else '2 x prep accuracy - 1'}",
    )
    return (
        f"{rollout.strategy}: {steps}, then 100%; each step judged on error rate <= stable + "
        f"{a.max_error_rate_increase:g}, p99 <= {a.max_p99_ratio:g} x stable, {agreement}, "
        f">= {a.min_samples} samples (fewer: {a.inconclusive})"
    )


def _cell(value: Any) -> str:
    return "—" if value is None else str(value)

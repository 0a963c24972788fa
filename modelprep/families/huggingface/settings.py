"""What prep needs to know about a text model beyond the optimize section: its task, labels and
tokenizer settings. They travel in `PrepRequest.family_settings` (JSON, through Pulumi state) and
are read back here, typed."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from iac.spec.models import Metric, ResolvedSpec
from modelprep.request import PrepRequest


class TextRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str  # sentence-embedding | text-classification
    labels: tuple[str, ...] | None = None  # from the spec; default: the config's id2label
    max_length: int = 256
    truncation: str = "truncate"


def text_of(req: PrepRequest) -> TextRequest:
    """The request's text settings (numbers that came back from Pulumi state as floats become ints)."""
    return TextRequest.model_validate(req.family_settings)


def text_prep_request(spec: ResolvedSpec, all_variants: bool = False) -> PrepRequest:
    """The prep request for a resolved spec whose model is a Hugging Face folder."""
    m = spec.spec.model
    (text,) = spec.inputs
    settings = text.tokenizing
    optimize = spec.spec.optimize
    task = spec.task
    if "metric" not in optimize.model_fields_set and task.value == "sentence-embedding":
        optimize = optimize.model_copy(update={"metric": Metric.cosine})
    text_request = TextRequest(
        task=task.value,
        labels=None if m.labels is None else tuple(m.labels),
        max_length=settings.max_length,
        truncation=settings.truncation.value,
    )
    return PrepRequest(
        family="huggingface",
        model_path=spec.model_path,
        model_sha256=m.sha256,
        calibration_path=spec.calibration_path,
        evaluation_path=spec.evaluation_path,
        input_name=text.name,
        sample_shape=(),
        input_dtype="string",
        optimize=optimize,
        threads=spec.spec.serving.threads,
        all_variants=all_variants,
        locations=spec.locations,
        family_settings=text_request.model_dump(mode="json", exclude_none=True),
    )

"""What prep needs to know about a text model beyond the optimize section: its task, labels and tokenizer settings."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from iac.spec.models import Metric


class TextRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str  # sentence-embedding | text-classification
    labels: tuple[str, ...] | None = None  # from the spec; default: the config's id2label
    max_length: int = 256
    truncation: str = "truncate"


def text_prep_request(spec: Any, all_variants: bool = False) -> Any:
    """The prep request for a resolved spec whose model is a Hugging Face folder."""
    from modelprep.request import PrepRequest

    m = spec.spec.model
    (text,) = spec.inputs
    settings = text.tokenizing
    optimize = spec.spec.optimize
    if "metric" not in optimize.model_fields_set and m.task.value == "sentence-embedding":
        optimize = optimize.model_copy(update={"metric": Metric.cosine})
    return PrepRequest(
        model_path=spec.model_path, model_sha256=m.sha256, calibration_path=spec.calibration_path,
        evaluation_path=spec.evaluation_path, input_name=text.name, sample_shape=(), optimize=optimize,
        threads=spec.spec.serving.threads, all_variants=all_variants, locations=spec.locations,
        text=TextRequest(task=m.task.value, labels=None if m.labels is None else tuple(m.labels),
                         max_length=settings.max_length, truncation=settings.truncation.value),
    )

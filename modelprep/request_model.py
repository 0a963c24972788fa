"""`PrepRequest`: what prep works on, as plain frozen data (it travels through Pulumi state as JSON).

Apart from `modelprep.request` (the keys and how a spec becomes a request) so the family contract
(`modelprep.family`) can name it without importing the registry that `prep_request` uses.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from iac.spec.models import Locations, Optimize


class PrepRequest(BaseModel):
    """What prep works on: the optimize section as the user wrote it (defaults filled in by the
    spec's models), the files it names as absolute paths, the input signature and the threads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: str = "keras"  # the model family (modelprep.families) that builds and measures it
    model_path: str
    model_sha256: str | None = None
    calibration_path: str
    evaluation_path: str
    fine_tuning_path: str | None = None  # .npz x (and y); default: calibration x, distilled
    input_name: str
    sample_shape: tuple[int, ...]
    input_dtype: str = "float32"  # of the one input ("string": one text per sample)
    # A model with several named inputs: (name, sample shape, dtype) of each; None for one input.
    inputs: tuple[tuple[str, tuple[int, ...], str], ...] | None = None
    optimize: Optimize = Optimize()
    threads: int = 1
    all_variants: bool = False
    latency_budget_s: float = 0.4  # time per latency loop; not part of any key
    locations: Locations = Locations()  # where the spec's fields are written; not part of any key
    # What only the family reads (e.g. a text model's task, labels and tokenizer settings), as
    # JSON: the family validates it into its own typed settings.
    family_settings: dict[str, Any] = {}

    def where(self, path: str) -> str:
        """Where the spec writes a field, for errors: `where("optimize.variants")` → "model.yaml:14"."""
        return self.locations.where(path)

    def changed(self, **changes: Any) -> PrepRequest:
        """A validated copy; `optimize` may be given as a dict of the fields that change."""
        data = self.model_dump()
        if isinstance(changes.get("optimize"), dict):
            changes["optimize"] = {**data["optimize"], **changes["optimize"]}
        return PrepRequest.model_validate({**data, **changes})

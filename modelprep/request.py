"""The prep stage's input and its content keys: the spec's optimize section plus what prep needs resolved.

`PrepRequest` is frozen plain data (it travels through Pulumi state as JSON). The keys hash
bytes and settings, never paths, and run no TensorFlow, so `pulumi preview` can compute them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from iac.spec.models import Locations, Metric, Optimize, ResolvedSpec
from modelprep.hashing import file_sha256, json_sha256
from modelprep.transformers.request import TextRequest
from modelprep.variants import Candidate, Variant, candidates

# Bump when conversion or evaluation changes, so cached artifacts are rebuilt.
PREP_VERSION = 3


class PrepRequest(BaseModel):
    """What prep works on: the optimize section as the user wrote it (defaults filled in by the
    spec's models), the files it names as absolute paths, the input signature and the threads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_path: str
    model_sha256: str | None = None
    calibration_path: str
    evaluation_path: str
    fine_tuning_path: str | None = None  # .npz x (and y); default: calibration x, distilled
    input_name: str
    sample_shape: tuple[int, ...]
    # A model with several named inputs: (name, sample shape, dtype) of each; None for one input.
    inputs: tuple[tuple[str, tuple[int, ...], str], ...] | None = None
    optimize: Optimize = Optimize()
    threads: int = 1
    all_variants: bool = False
    latency_budget_s: float = 0.4  # time per latency loop; not part of any key
    locations: Locations = Locations()  # where the spec's fields are written; not part of any key
    text: TextRequest | None = None  # a Hugging Face text model (modelprep.transformers); None for Keras
    context_length: int | None = None  # text generation: tokens per sequence (serving.context_length, resolved)

    def where(self, path: str) -> str:
        """Where the spec writes a field, for errors: `where("optimize.variants")` → "model.yaml:14"."""
        return self.locations.where(path)

    def changed(self, **changes: Any) -> PrepRequest:
        """A validated copy; `optimize` may be given as a dict of the fields that change."""
        data = self.model_dump()
        if isinstance(changes.get("optimize"), dict):
            changes["optimize"] = {**data["optimize"], **changes["optimize"]}
        return PrepRequest.model_validate({**data, **changes})

    def candidates(self) -> list[Candidate]:
        """What to try. A variant the spec knows but this model family cannot make (one for
        another family) is a UserError at the spec's line."""
        from iac.spec.errors import UserError
        from modelprep.variants import CATALOG

        o = self.optimize
        foreign = [v.value for v in o.variants or [] if v.value not in CATALOG]
        if foreign:
            raise UserError.single(self.where("optimize.variants"), "optimize.variants",
                                   f"{', '.join(foreign)} cannot be made from a Keras model",
                                   f"use some of {', '.join(CATALOG)}")
        made = candidates(
            None if o.variants is None else tuple(v.value for v in o.variants),
            None if o.quantization is None else o.quantization.value,
            o.int8_io, o.pruning is not None, o.clustering is not None, o.qat is not None, self.all_variants,
        )
        if self.inputs is None:
            return made
        # Several inputs: integer ids must stay integer (int8 variants quantize float tensors only,
        # so int8 inputs are refused), and the fine-tuning worker feeds one input tensor.
        refused = [c.variant.name for c in made if c.variant.name == "litert-int8-io" or c.variant.needs_fine_tuning]
        if refused:
            field = "optimize.variants" if o.variants is not None else (
                "optimize.int8_io" if "litert-int8-io" in refused and o.int8_io else "optimize.variants")
            raise UserError.single(
                self.where(field), field,
                f"{', '.join(refused)} cannot be made for a model with several inputs "
                f"({', '.join(name for name, _, _ in self.inputs)}): int8 inputs would turn integer ids into "
                "quantized numbers, and pruning, clustering and QAT fine-tune through one input tensor",
                "use litert-float32, litert-dynamic, litert-float16, litert-int8 (float tensors quantized, ids "
                "stay integer) or the onnx-* variants",
            )
        return made


def prep_request(spec: ResolvedSpec, all_variants: bool = False) -> PrepRequest:
    if spec.model_format.value == "huggingface":
        from modelprep.transformers.request import text_prep_request

        return text_prep_request(spec, all_variants)
    tensor = spec.spec.model.inputs[0]
    several = spec.spec.model.inputs if len(spec.spec.model.inputs or []) > 1 else None
    return PrepRequest(
        inputs=None if several is None else tuple((t.name, tuple(t.shape or ()), t.dtype.value) for t in several),
        model_path=spec.model_path,
        model_sha256=spec.spec.model.sha256,
        calibration_path=spec.calibration_path,
        evaluation_path=spec.evaluation_path,
        fine_tuning_path=spec.fine_tuning_path,
        input_name=tensor.name,
        sample_shape=tuple(tensor.shape),
        optimize=spec.spec.optimize,
        threads=spec.spec.serving.threads,
        all_variants=all_variants,
        locations=spec.locations,
    )


def prep_key(req: PrepRequest) -> str:
    """Content address of the result: the bytes of every input plus the settings."""
    return json_sha256({"version": PREP_VERSION, **data_hashes(req), "settings": _settings(req)})


def data_hashes(req: PrepRequest) -> dict[str, str | None]:
    return {
        "model": file_sha256(req.model_path),
        "calibration": file_sha256(req.calibration_path),
        "evaluation": file_sha256(req.evaluation_path),
        "fine_tuning": file_sha256(req.fine_tuning_path) if req.fine_tuning_path else None,
    }


def variant_key(req: PrepRequest, variant: Variant, hashes: dict[str, str | None]) -> str:
    """Content address of one measured variant: what makes it and how it is judged, nothing
    about the choice, so a changed objective or gate re-measures nothing."""
    o = req.optimize
    settings: dict[str, Any] = {"quantization": variant.quantization, "int8_io": variant.name == "litert-int8-io"}
    if variant.technique in TECHNIQUES:
        field = TECHNIQUES[variant.technique]
        settings[field] = technique_settings(o, variant.technique)
    return json_sha256({
        "version": PREP_VERSION, "variant": variant.name,
        "data": hashes if variant.needs_fine_tuning else {k: v for k, v in hashes.items() if k != "fine_tuning"},
        "settings": canon(settings), "metric": o.metric.value, "top_k": _top_k(o), "threads": req.threads,
        "input": [req.input_name, list(req.sample_shape)],
        **({} if req.inputs is None else {"inputs": canon(req.inputs)}),
    })


def baseline_key(req: PrepRequest, hashes: dict[str, str | None]) -> str:
    """Content address of the Keras baselines' measures."""
    o = req.optimize
    return json_sha256({"version": PREP_VERSION, "baseline": "keras", "model": hashes["model"],
                        "evaluation": hashes["evaluation"], "metric": o.metric.value, "top_k": _top_k(o),
                        "threads": req.threads})


# The spec field that configures each fine-tuning technique.
TECHNIQUES = {"pruned": "pruning", "clustered": "clustering", "qat": "qat"}


def technique_settings(o: Optimize, technique: str) -> dict[str, Any]:
    """The technique's settings with the spec's defaults filled in (the spec's models own them)."""
    from iac.spec.models import Clustering, Pruning, QuantizationAwareTraining

    default = {"pruned": Pruning, "clustered": Clustering, "qat": QuantizationAwareTraining}[technique]()
    given = getattr(o, TECHNIQUES[technique])
    return (given or default).model_dump(mode="json")


def _top_k(o: Optimize) -> int | None:
    return o.top_k if o.metric == Metric.top_k else None


def _settings(req: PrepRequest) -> dict[str, Any]:
    optimize = req.optimize.model_dump(mode="json", exclude={"fine_tuning_data"})  # data is keyed by its bytes
    return canon({**optimize, "model_sha256": req.model_sha256, "input_name": req.input_name,
                   "sample_shape": list(req.sample_shape), "inputs": req.inputs, "threads": req.threads, "all_variants": req.all_variants,
                   "text": None if req.text is None else req.text.model_dump(mode="json")})


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

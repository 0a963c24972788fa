"""The keras family: a trained Keras / TensorFlow model (.keras, .h5, SavedModel) made into LiteRT and
ONNX variants by post-training quantization, pruning, clustering and QAT, measured with the server's
LiteRT and ONNX Runtime classes against the Keras model as trained."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from iac.spec.errors import UserError
from modelprep.families.keras.settings import variant_settings
from modelprep.families.keras.variants import CATALOG, candidates
from modelprep.family import (
    Baselines,
    Candidate,
    Family,
    Measured,
    Notes,
    Progress,
    Quality,
    SpecProblem,
    Step,
    Variant,
    Written,
)
from modelprep.request import PrepRequest

if TYPE_CHECKING:
    from pathlib import Path

    import numpy as np

    from iac.spec.models import ModelSpec, ResolvedSpec
    from modelprep.cache import Cache
    from modelprep.report import Measure

# Several inputs: what cannot be made (int8 inputs would quantize integer ids; the fine-tuning
# worker feeds one input tensor).
_SEVERAL_INPUTS_FIX = (
    "use litert-float32, litert-dynamic, litert-float16, litert-int8 (float tensors quantized, ids "
    "stay integer) or the onnx-* variants"
)


class KerasFamily:
    name: str = "keras"
    formats: tuple[str, ...] = ("keras",)
    tasks: tuple[str, ...] = ("predict",)
    catalogue: Mapping[str, Variant] = CATALOG
    honours: frozenset[str] = frozenset(
        {
            "objective",
            "metric",
            "top_k",
            "max_accuracy_drop",
            "quantization",
            "variants",
            "int8_io",
            "pruning",
            "clustering",
            "qat",
            "fine_tuning_data",
        }
    )
    metrics: Mapping[str, Quality] = MappingProxyType(
        {
            "accuracy": Quality("accuracy"),
            "top_k": Quality("top_k"),
            "mae": Quality("mae", lower_is_better=True, percent=False),
        }
    )
    baseline: str = "keras"
    reference: str | None = "litert-float32"
    gentle: tuple[str, ...] = ("litert-float16", "litert-dynamic", "litert-float32")
    gate_field: str = "optimize.max_accuracy_drop"
    requirements: Mapping[str, str] = MappingProxyType({"litert": "requirements.txt", "onnx": "requirements-onnx.txt"})

    def spec_problems(self, spec: ModelSpec, folder: Path, written: Written) -> list[SpecProblem]:
        problems = []
        if spec.model.inputs is None:
            problems.append(
                SpecProblem(
                    ("model",), "a keras model needs its input signature", "add inputs with name, shape and dtype"
                )
            )
        problems += [
            SpecProblem(("data", field), "a Keras model reads arrays", "save them with numpy.savez as a .npz file")
            for field in ("calibration", "evaluation")
            if not getattr(spec.data, field).endswith(".npz")
        ]
        if spec.optimize.metric.value not in self.metrics:
            problems.append(
                SpecProblem(
                    ("optimize", "metric"),
                    f'"{spec.optimize.metric.value}" does not score a Keras model',
                    f"use {', '.join(self.metrics)}",
                )
            )
        return problems

    def request(self, spec: ResolvedSpec, all_variants: bool = False) -> PrepRequest:
        signature = spec.inputs  # a keras model's inputs are written in the spec (validated there)
        tensor = signature[0]
        several = signature if len(signature) > 1 else None
        return PrepRequest(
            family=self.name,
            inputs=None if several is None else tuple((t.name, tuple(t.shape or ()), t.dtype.value) for t in several),
            model_path=spec.model_path,
            model_sha256=spec.spec.model.sha256,
            calibration_path=spec.calibration_path,
            evaluation_path=spec.evaluation_path,
            fine_tuning_path=spec.fine_tuning_path,
            input_name=tensor.name,
            sample_shape=tuple(tensor.shape or ()),
            input_dtype=tensor.dtype.value,
            optimize=spec.spec.optimize,
            threads=spec.spec.serving.threads,
            all_variants=all_variants,
            locations=spec.locations,
        )

    def candidates(self, req: PrepRequest) -> list[Candidate]:
        o = req.optimize
        foreign = [v.value for v in o.variants or [] if v.value not in CATALOG]
        if foreign:
            raise UserError.single(
                req.where("optimize.variants"),
                "optimize.variants",
                f"{', '.join(foreign)} cannot be made from a Keras model",
                f"use some of {', '.join(CATALOG)}",
            )
        made = candidates(
            None if o.variants is None else tuple(v.value for v in o.variants),
            None if o.quantization is None else o.quantization.value,
            o.int8_io,
            o.pruning is not None,
            o.clustering is not None,
            o.qat is not None,
            req.all_variants,
        )
        if req.inputs is None:
            return made
        refused = [
            c.variant.name for c in made if c.variant.name == "litert-int8-io" or c.variant.uses_fine_tuning_data
        ]
        if refused:
            field = (
                "optimize.variants"
                if o.variants is not None
                else ("optimize.int8_io" if "litert-int8-io" in refused and o.int8_io else "optimize.variants")
            )
            raise UserError.single(
                req.where(field),
                field,
                f"{', '.join(refused)} cannot be made for a model with several inputs "
                f"({', '.join(name for name, _, _ in req.inputs)}): int8 inputs would turn integer ids into "
                "quantized numbers, and pruning, clustering and QAT fine-tune through one input tensor",
                _SEVERAL_INPUTS_FIX,
            )
        return made

    def variant_settings(self, req: PrepRequest, variant: Variant) -> dict[str, Any]:
        return variant_settings(req.optimize, variant)

    def judge(self, req: PrepRequest, measure: Measure) -> str | None:
        return None  # the gate and the candidates' eligibility say it all

    def input_ranges(self, req: PrepRequest) -> dict[str, tuple[int, int]]:
        from modelprep.families.keras.ranges import input_ranges

        return input_ranges(req.model_path)

    def session(self, req: PrepRequest, cache: Cache, progress: Progress, step: Step) -> KerasSession:
        return KerasSession(req, progress, step)


class KerasSession:
    """One prep run: loads the data and the model once, only when something must be made."""

    def __init__(self, req: PrepRequest, progress: Progress, step: Step) -> None:
        self.req, self.progress, self.step = req, progress, step
        self._onnx_float: dict[str, bytes] = {}
        self._loaded = False

    def _load(self) -> None:
        if self._loaded:
            return
        from modelprep.families.keras import convert
        from modelprep.families.keras.data import load_npz, load_npz_inputs

        r = self.req
        labels = "value" if r.optimize.metric.value == "mae" else "class"
        self.progress("loading data")
        if r.inputs is not None:  # several named inputs: one array per input name
            self.calibration = load_npz_inputs(
                r.calibration_path, "data.calibration", r.inputs, need_labels=False, labels=labels
            )
            self.evaluation = load_npz_inputs(
                r.evaluation_path, "data.evaluation", r.inputs, need_labels=True, labels=labels
            )
        else:
            self.calibration = load_npz(
                r.calibration_path, "data.calibration", r.sample_shape, need_labels=False, labels=labels
            )
            self.evaluation = load_npz(
                r.evaluation_path, "data.evaluation", r.sample_shape, need_labels=True, labels=labels
            )
        if r.fine_tuning_path and r.inputs is None:  # (fine-tuning variants are refused for several inputs)
            load_npz(r.fine_tuning_path, "optimize.fine_tuning_data", r.sample_shape, need_labels=False, labels=labels)
        self.progress("loading model")
        _pin_tf_threads(r.threads)
        self.model = convert.load_model(r.model_path)
        self._loaded = True

    def _labelled(self) -> tuple[np.ndarray, np.ndarray]:
        self._load()
        assert self.evaluation.y is not None  # loaded with need_labels=True
        return self.evaluation.x, self.evaluation.y

    def evaluation_samples(self) -> int:
        import numpy as np

        with np.load(self.req.evaluation_path, allow_pickle=False) as data:
            return len(data["x" if self.req.inputs is None else self.req.inputs[0][0]])

    def baselines(self) -> Baselines:
        from modelprep.families.keras.measure import keras_baselines

        x, y = self._labelled()
        return Baselines(keras_baselines(self.req, self.model, x, y, self.progress))

    def build(self, variants: Sequence[Variant]) -> Iterator[tuple[Variant, bytes, Notes]]:
        """Post-training variants one by one; the fine-tuned ones in one worker run."""
        from modelprep.families.keras.build import converted, fine_tuned

        for variant in [v for v in variants if not v.uses_fine_tuning_data]:
            self._load()
            artifact, notes = converted(
                self.req, self.model, self.calibration.x, variant, self._onnx_float, self.progress
            )
            yield variant, artifact, notes
        tuned = [v for v in variants if v.uses_fine_tuning_data]
        if tuned:
            self._load()
            made = fine_tuned(self.req, self.model, tuned, self.progress, self.step)
            for variant in tuned:
                yield (variant, *made[variant.name])

    def measure(self, variant: Variant, artifact: bytes, notes: Notes, reference: np.ndarray | None) -> Measured:
        from modelprep.families.keras.measure import measure_variant

        x, y = self._labelled()
        return measure_variant(self.req, variant, artifact, notes, x, y)


def _pin_tf_threads(threads: int) -> None:
    from modelprep.tf_env import tensorflow

    tf = tensorflow()
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started (an earlier prep in this process)
        pass


FAMILY: Family = KerasFamily()  # checked against the contract by mypy

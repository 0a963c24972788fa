"""The prep stage's input: the spec's model, data and optimize sections as one `PrepRequest`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iac.spec.models import ResolvedSpec
from modelprep.prep import PrepRequest


def prep_request(spec: ResolvedSpec, all_variants: bool = False) -> PrepRequest:
    s = spec.spec
    o = s.optimize
    tensor = s.model.inputs[0]
    fine_tuning = None
    if o.fine_tuning_data is not None:
        fine_tuning = str((Path(spec.spec_file).parent / o.fine_tuning_data).resolve())
    return PrepRequest(
        model_path=spec.model_path,
        model_sha256=s.model.sha256,
        calibration_path=spec.calibration_path,
        evaluation_path=spec.evaluation_path,
        input_name=tensor.name,
        sample_shape=tuple(tensor.shape),
        quantization=None if o.quantization is None else o.quantization.value,
        max_accuracy_drop=o.max_accuracy_drop,
        objective=o.objective.value,
        metric=o.metric.value,
        top_k=o.top_k,
        variants=None if o.variants is None else tuple(v.value for v in o.variants),
        int8_io=o.int8_io,
        pruning=None if o.pruning is None else o.pruning.model_dump(mode="json"),
        clustering=None if o.clustering is None else o.clustering.model_dump(mode="json"),
        qat=None if o.qat is None else o.qat.model_dump(mode="json"),
        fine_tuning_path=fine_tuning,
        threads=s.serving.threads,
        all_variants=all_variants,
    )


def prep_request_dict(spec: ResolvedSpec) -> dict[str, Any]:
    return prep_request(spec).to_dict()

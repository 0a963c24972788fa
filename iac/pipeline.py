"""The stages after load/validate/resolve, as plain functions the CLI and the Pulumi component share:
prep (modelprep) and the content keys that tell preview what would change."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from iac.spec import ResolvedSpec
from modelprep.hashing import json_sha256
from modelprep.prep import PrepRequest


def prep_request(spec: ResolvedSpec) -> PrepRequest:
    s = spec.spec
    tensor = s.model.inputs[0]
    return PrepRequest(
        model_path=spec.model_path,
        model_sha256=s.model.sha256,
        calibration_path=spec.calibration_path,
        evaluation_path=spec.evaluation_path,
        input_name=tensor.name,
        sample_shape=tuple(tensor.shape),
        quantization=s.optimize.quantization.value,
        max_accuracy_drop=s.optimize.max_accuracy_drop,
    )


def prep_request_dict(spec: ResolvedSpec) -> dict[str, Any]:
    data = asdict(prep_request(spec))
    data["sample_shape"] = list(data["sample_shape"])
    return data


def context_key(spec: ResolvedSpec, prep_key: str) -> str:
    """Identity of the build context: the artifact's key, what the templates read from the
    spec, and the templates, server code and wheels themselves."""
    from iac.render import context_inputs

    s = spec.spec
    return json_sha256(
        {
            "prep": prep_key,
            "name": s.name,
            "inputs": [t.model_dump(mode="json") for t in s.model.inputs],
            "serving": s.serving.model_dump(mode="json"),
            "base_image": s.deploy.base_image,
            "context": context_inputs(),
        }
    )


def container_settings(spec: ResolvedSpec) -> dict[str, Any]:
    from iac.spec import memory_bytes

    d = spec.spec.deploy
    return {
        "port": spec.spec.serving.port,
        "bind_address": str(d.bind_address),
        "host_port": d.host_port,
        "cpus": d.cpus,
        "memory_bytes": memory_bytes(d.memory),
    }


def endpoint(spec: ResolvedSpec) -> str:
    d = spec.spec.deploy
    return f"http://{d.bind_address}:{d.host_port}/v1/models/{spec.spec.name}:predict"

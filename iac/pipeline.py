"""The stages after load/validate/resolve, as plain functions the CLI and the Pulumi component share:
prep (modelprep) and the content keys that tell preview what would change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from iac.spec import ResolvedSpec
from modelprep.hashing import json_sha256
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


def replica_settings(spec: ResolvedSpec) -> dict[str, Any]:
    """What a model container runs with; a change rolls out new replicas."""
    from iac.spec import memory_bytes

    d = spec.spec.deploy
    return {
        "port": spec.spec.serving.port,
        "host_port": d.host_port,
        "cpus": d.cpus,
        "memory_bytes": memory_bytes(d.memory),
        "pids": 256,
    }


def proxy_settings(spec: ResolvedSpec) -> dict[str, Any]:
    from iac.proxy_config import PROXY_PORT

    d = spec.spec.deploy
    return {"bind_address": str(d.bind_address), "host_port": d.host_port, "proxy_port": PROXY_PORT}


def probe_host(spec: ResolvedSpec) -> str:
    """Where this host reaches the proxy (a wildcard bind is reachable on loopback)."""
    address = str(spec.spec.deploy.bind_address)
    return "127.0.0.1" if address == "0.0.0.0" else address


def base_url(spec: ResolvedSpec) -> str:
    return f"http://{probe_host(spec)}:{spec.spec.deploy.host_port}"


def endpoint(spec: ResolvedSpec) -> str:
    return f"{base_url(spec)}/v1/models/{spec.spec.name}:predict"

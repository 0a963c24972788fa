"""TensorFlow Serving's REST API (``/v1``): predict bodies to batches, status and metadata documents, the routes."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.batched import batched, model_document
from serving.config import InputSpec, ServingConfig
from serving.errors import ClientError, encode_json, kind, show
from serving.messages import Request, Response
from serving.tensors import check_finite_outputs, dumps, parse_json, to_batch

if TYPE_CHECKING:
    from serving.runtime import Runtime
    from serving.state import ModelState

Reply = Callable[[Callable[[], Response]], None]

_PREDICT_FIELDS = ("instances", "inputs", "signature_name")
TF_DTYPES = {
    "float32": "DT_FLOAT", "float16": "DT_HALF", "float64": "DT_DOUBLE", "int8": "DT_INT8",
    "uint8": "DT_UINT8", "int16": "DT_INT16", "int32": "DT_INT32", "int64": "DT_INT64",
    "bool": "DT_BOOL", "string": "DT_STRING",
}


# --- documents (pure functions) ------------------------------------------------------------------


def decode_predict_request(body: bytes, spec: InputSpec) -> tuple[np.ndarray, bool]:
    """Turn a TF Serving predict body into an input batch; also say whether it was row format."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ClientError(
            400, f'the body must be a JSON object with "instances" or "inputs", got {kind(payload)}'
        )
    if len(payload) == 1 and "instances" in payload:  # the usual body: nothing else to check
        data = _unwrap_rows(payload["instances"], spec.name)
        return to_batch(data, spec, "instances"), True
    check_predict_fields(payload)
    if "instances" in payload and "inputs" in payload:
        raise ClientError(
            400, 'give either "instances" (row format) or "inputs" (columnar format), not both'
        )
    if "instances" in payload:
        data, field, row_format = _unwrap_rows(payload["instances"], spec.name), "instances", True
    elif "inputs" in payload:
        data, field, row_format = _unwrap_columns(payload["inputs"], spec.name), "inputs", False
    else:
        raise ClientError(
            400, 'missing "instances" (row format) or "inputs" (columnar format) in the body'
        )
    return to_batch(data, spec, field), row_format


def check_predict_fields(payload: dict[str, Any]) -> None:
    """A predict body's fields are among "instances", "inputs" and "signature_name" (only the
    served signature)."""
    extra = sorted(key for key in payload if key not in _PREDICT_FIELDS)
    if extra:
        raise ClientError(
            400,
            f"unexpected field(s) {', '.join(map(show, extra))}; the body takes "
            '"instances" (row format) or "inputs" (columnar format)',
        )
    signature = payload.get("signature_name", "serving_default")
    if signature != "serving_default":
        raise ClientError(
            400, f'signature_name: only "serving_default" is served, got {show(signature)}'
        )


def _unwrap_rows(instances: Any, name: str) -> Any:
    """Row format: each instance is the sample itself or {"<name>": sample}."""
    if not isinstance(instances, list) or not instances:
        raise ClientError(
            400,
            f'"instances" must be a non-empty array of samples for input "{name}", '
            f"got {kind(instances) if not isinstance(instances, list) else 'an empty array'}",
        )
    if not isinstance(instances[0], dict):
        return instances  # non-numeric entries are reported by to_batch
    samples = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict) or instance.keys() != {name}:
            raise ClientError(
                400,
                f'instances[{i}]: expected an object with the single key "{name}" (the model\'s '
                f"input), got {show(instance)}",
            )
        samples.append(instance[name])
    return samples


def _unwrap_columns(inputs: Any, name: str) -> Any:
    """Columnar format: the batch itself or {"<name>": batch}."""
    if isinstance(inputs, dict):
        if inputs.keys() != {name}:
            raise ClientError(
                400,
                f'"inputs": expected the single key "{name}" (the model\'s input), '
                f"got keys {show(sorted(inputs))}",
            )
        return inputs[name]
    return inputs


def encode_outputs(key: str, outputs: np.ndarray, labels: tuple[str, ...] = ()) -> bytes:
    """``{"<key>": outputs}`` as JSON bytes; a model output that is not finite is a server error.
    A classifier with class names answers each row as its label and every label's probability."""
    if labels:
        check_finite_outputs(outputs)
        from serving.text import labelled

        return dumps({key: labelled(outputs, labels)})
    try:
        body = dumps({key: np.ascontiguousarray(outputs)})
    except ValueError:  # the standard library's encoder refuses NaN: say what is wrong instead
        check_finite_outputs(outputs)
        raise
    if b"null" in body:  # orjson writes NaN and infinities as null, and nothing else here is null
        check_finite_outputs(outputs)
    return body


def status_body(state: str) -> bytes:
    return encode_json(
        {
            "model_version_status": [
                {"version": "1", "state": state, "status": {"error_code": "OK", "error_message": ""}}
            ]
        }
    ).encode()


def tensor_info(name: str, dtype: str, shape: tuple[int, ...]) -> dict[str, Any]:
    dims = [{"size": str(size), "name": ""} for size in (-1, *shape)]
    return {
        "dtype": TF_DTYPES.get(dtype, dtype),
        "tensor_shape": {"dim": dims, "unknown_rank": False},
        "name": name,
    }


def metadata_document(config: ServingConfig, model: Runtime) -> dict[str, Any]:
    """TF Serving's metadata response, plus the config's metadata under "modelstack"."""
    spec = config.input
    signature = {
        "inputs": {spec.name: tensor_info(spec.name, spec.dtype, spec.shape)},
        "outputs": {
            "output_0": tensor_info("output_0", model.output_dtype.name, model.output_shape)
        },
        "method_name": "tensorflow/serving/predict",
    }
    return {
        "model_spec": {"name": config.model_name, "signature_name": "", "version": "1"},
        "metadata": {
            "signature_def": {"signature_def": {"serving_default": signature}},
            "modelstack": config.metadata,
        },
    }


# --- routes ------------------------------------------------------------------------------------

_LOADING = status_body("LOADING")
_AVAILABLE = status_body("AVAILABLE")


def model_status(state: ModelState, request: Request, reply: Reply) -> Response:
    return Response(200, _AVAILABLE if state.ready else _LOADING)


def model_metadata(state: ModelState, request: Request, reply: Reply) -> Response:
    return Response(200, model_document(state, "v1_metadata", metadata_document))


def predict(state: ModelState, request: Request, reply: Reply) -> None:
    run_predict(state, request, reply, lambda body: decode_predict_request(body, state.config.input))


def run_predict(
    state: ModelState, request: Request, reply: Reply, decode: Callable[[bytes], tuple[np.ndarray, bool]],
) -> None:
    """A predict request: ``decode`` turns the body into a batch (and says whether it was row format);
    the batcher runs it and the answer is ``{"predictions"|"outputs": ...}``."""
    served = batched(state)
    batch, row_format = decode(request.body)
    key = "predictions" if row_format else "outputs"
    labels = getattr(served.runtime, "labels", ())
    served.batcher.submit_answer(batch, lambda outputs: Response(200, encode_outputs(key, outputs, labels)), reply)

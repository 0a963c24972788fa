"""TensorFlow Serving's REST API (``/v1``): predict bodies to batches, status and metadata documents, the routes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.batched import batched, model_document
from serving.config import InputSpec, ServingConfig
from serving.errors import ClientError, encode_json, kind, show
from serving.messages import Request, Response
from serving.request import InferInput, InferRequest, bind, check_names, names
from serving.tensors import check_finite_outputs, dumps, parse_json

if TYPE_CHECKING:
    from serving.runtime import Runtime
    from serving.state import ModelState

Reply = Callable[[Callable[[], Response]], None]

_PREDICT_FIELDS = ("instances", "inputs", "signature_name")
TF_DTYPES = {
    "float32": "DT_FLOAT",
    "float16": "DT_HALF",
    "float64": "DT_DOUBLE",
    "int8": "DT_INT8",
    "uint8": "DT_UINT8",
    "int16": "DT_INT16",
    "int32": "DT_INT32",
    "int64": "DT_INT64",
    "bool": "DT_BOOL",
    "string": "DT_STRING",
}


# --- documents (pure functions) ------------------------------------------------------------------


def decode_predict_request(body: bytes, inputs: InputSpec | Sequence[InputSpec]) -> tuple[np.ndarray, bool]:
    """A TF Serving predict body as the model's input batch (``serving.request.bind``); also say
    whether it was row format (the answer's key depends on it)."""
    specs = (inputs,) if isinstance(inputs, InputSpec) else tuple(inputs)
    request, row_format = read_predict_request(body, specs)
    return bind(request, specs, '"inputs"'), row_format


def read_predict_request(body: bytes, inputs: Sequence[InputSpec]) -> tuple[InferRequest, bool]:
    """A TF Serving predict body as an ``InferRequest`` (one tensor per input, its values nested as
    sent) and whether it was row format."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ClientError(400, f'the body must be a JSON object with "instances" or "inputs", got {kind(payload)}')
    if not (len(payload) == 1 and "instances" in payload):  # the usual body has nothing else to check
        check_predict_fields(payload)
        if "instances" in payload and "inputs" in payload:
            raise ClientError(400, 'give either "instances" (row format) or "inputs" (columnar format), not both')
    # JSON booleans come only from these tokens: a body without them skips the (bounded) scan.
    bools = b"true" in body or b"false" in body
    if "instances" in payload:
        return InferRequest(_rows(payload["instances"], inputs, bools)), True
    if "inputs" in payload:
        return InferRequest(_columns(payload["inputs"], inputs, bools)), False
    raise ClientError(400, 'missing "instances" (row format) or "inputs" (columnar format) in the body')


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
        raise ClientError(400, f'signature_name: only "serving_default" is served, got {show(signature)}')


def _expected(inputs: Sequence[InputSpec]) -> str:
    if len(inputs) == 1:
        return f'the single key "{inputs[0].name}" (the model\'s input)'
    return f"the inputs {names(inputs)}"


def _rows(instances: Any, inputs: Sequence[InputSpec], bools: bool) -> tuple[InferInput, ...]:
    """Row format: each instance is the sample itself (a one-input model) or {"<input>": sample, ...}."""
    if not isinstance(instances, list) or not instances:
        got = kind(instances) if not isinstance(instances, list) else "an empty array"
        raise ClientError(400, f'"instances" must be a non-empty array of samples with {_expected(inputs)}, got {got}')
    if len(inputs) == 1 and not isinstance(instances[0], dict):  # non-numeric entries are reported when bound
        return (InferInput(inputs[0].name, data=instances, field="instances", may_hold_bools=bools),)
    keys = {spec.name for spec in inputs}
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise ClientError(400, f"instances[{i}]: expected an object with {_expected(inputs)}, got {show(instance)}")
        if instance.keys() != keys:
            if len(inputs) == 1:
                raise ClientError(
                    400, f"instances[{i}]: expected an object with {_expected(inputs)}, got {show(instance)}"
                )
            check_names(list(instance), inputs, f"instances[{i}]")
    field = "instances" if len(inputs) == 1 else "instances[*].{}"
    return tuple(
        InferInput(
            spec.name,
            data=[instance[spec.name] for instance in instances],
            field=field.format(spec.name),
            may_hold_bools=bools,
        )
        for spec in inputs
    )


def _columns(columns: Any, inputs: Sequence[InputSpec], bools: bool) -> tuple[InferInput, ...]:
    """Columnar format: the batch itself (a one-input model) or {"<input>": batch, ...}."""
    if not isinstance(columns, dict):
        if len(inputs) == 1:
            return (InferInput(inputs[0].name, data=columns, field="inputs", may_hold_bools=bools),)
        raise ClientError(
            400, f'"inputs" must be an object with one batch per input ({names(inputs)}), got {kind(columns)}'
        )
    if len(inputs) == 1 and columns.keys() != {inputs[0].name}:
        raise ClientError(400, f'"inputs": expected {_expected(inputs)}, got keys {show(sorted(columns))}')
    check_names(list(columns), inputs, '"inputs"')
    field = "inputs" if len(inputs) == 1 else "inputs.{}"
    return tuple(
        InferInput(name, data=batch, field=field.format(name), may_hold_bools=bools) for name, batch in columns.items()
    )


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
    signature = {
        "inputs": {spec.name: tensor_info(spec.name, spec.dtype, spec.shape) for spec in config.inputs},
        "outputs": {"output_0": tensor_info("output_0", model.output_dtype.name, model.output_shape)},
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
    run_predict(state, request, reply, lambda body: decode_predict_request(body, state.config.inputs))


def run_predict(
    state: ModelState,
    request: Request,
    reply: Reply,
    decode: Callable[[bytes], tuple[np.ndarray, bool]],
) -> None:
    """A predict request: ``decode`` turns the body into a batch (and says whether it was row format);
    the batcher runs it and the answer is ``{"predictions"|"outputs": ...}``."""
    served = batched(state)
    batch, row_format = decode(request.body)
    key = "predictions" if row_format else "outputs"
    labels = getattr(served.runtime, "labels", ())
    served.batcher.submit_answer(batch, lambda outputs: Response(200, encode_outputs(key, outputs, labels)), reply)

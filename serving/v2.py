"""Open Inference Protocol V2 (``/v2``, KServe's HTTP/REST form): infer bodies to batches, responses, metadata, the routes.

Tensor ``data`` may be flat (row-major) or nested in the tensor's shape, or, with the binary
tensor data extension (``serving.v2_binary``), raw bytes after a JSON header; outputs go back
as binary when the request asks (``binary_data`` on the output, ``binary_data_output`` on the
request), as ``tritonclient.http`` does by default. Handlers get the whole
``Request`` (headers included) and answer a ``Response``, which may carry extra headers and any
content type.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from serving import v2_binary
from serving.batched import batched, model_document
from serving.bytes_tensors import TensorDataError
from serving.config import InputSpec, ServingConfig
from serving.errors import ClientError, encode_json, kind, show
from serving.messages import Request, Response
from serving.request import InferInput, InferRequest, bind
from serving.tensors import (
    V2_DATATYPES,
    check_finite_outputs,
    dumps,
    parse_json,
)

if TYPE_CHECKING:
    from serving.runtime import Runtime
    from serving.state import ModelState

Reply = Callable[[Callable[[], Response]], None]

_REQUEST_FIELDS = ("id", "parameters", "inputs", "outputs")
INPUT_FIELDS = ("name", "shape", "datatype", "data", "parameters")
_OUTPUT_FIELDS = ("name", "parameters")
OUTPUT_NAME = "output_0"
_HEADER_LENGTH_NAME = "Inference-Header-Content-Length"


# --- documents (pure functions) ------------------------------------------------------------------


def server_metadata(version: str) -> dict[str, Any]:
    return {"name": "modelstack", "version": version, "extensions": ["binary_tensor_data"]}


def model_metadata_document(config: ServingConfig, model: Runtime) -> dict[str, Any]:
    return {
        "name": config.model_name,
        "versions": ["1"],
        "platform": model.platform,
        "inputs": [
            {"name": spec.name, "datatype": V2_DATATYPES.get(spec.dtype, "BYTES"), "shape": [-1, *spec.shape]}
            for spec in config.inputs
        ],
        "outputs": [
            {
                "name": OUTPUT_NAME,
                "datatype": V2_DATATYPES.get(model.output_dtype.name, model.output_dtype.name.upper()),
                "shape": [-1, *model.output_shape],
            }
        ],
    }


def read_envelope(body: bytes, header_length: str | None) -> tuple[dict[str, Any], memoryview | None, str | None]:
    """What every V2 infer body shares, checked: the JSON object (the first ``header_length`` bytes
    with the binary data extension), the binary tail after it, and the request ``id``."""
    tail: memoryview | None = None
    if header_length is not None:
        try:
            size = v2_binary.header_length(header_length, len(body))
        except TensorDataError as exc:
            raise ClientError(400, str(exc)) from None
        body, tail = body[:size], memoryview(body)[size:]
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ClientError(400, f'the body must be a JSON object with "inputs", got {kind(payload)}')
    no_extra(payload, _REQUEST_FIELDS, "the request")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ClientError(400, f"id: must be a string, got {show(request_id)}")
    check_parameters(payload, "parameters", "binary_data_output")
    if "outputs" in payload:
        _check_requested_outputs(payload["outputs"])
    return payload, tail, request_id


def decode_infer(
    body: bytes, inputs: InputSpec | Sequence[InputSpec], header_length: str | None = None
) -> tuple[np.ndarray, str | None, bool]:
    """A V2 infer body as (input batch, request ``id`` or None, whether the output goes back binary):
    ``read_infer_request``, then ``serving.request.bind`` against the model's inputs."""
    request, tail = read_infer_request(body, header_length)
    batch = bind(request, (inputs,) if isinstance(inputs, InputSpec) else inputs)
    if tail is not None:  # after the tensors, whose own size problems say more
        try:
            tail.finish()
        except TensorDataError as exc:
            raise ClientError(400, str(exc)) from None
    return batch, request.id, request.binary_output


def read_infer_request(
    body: bytes, header_length: str | None = None
) -> tuple[InferRequest, v2_binary.BinaryTail | None]:
    """A V2 infer body (JSON, or the binary data extension's) as an ``InferRequest``, its form checked,
    and the binary tail whose ``finish`` says whether bytes were left over.

    With ``header_length`` (the ``Inference-Header-Content-Length`` value) the body is the
    binary data extension's: that many bytes of JSON, then the bytes of each input whose
    ``parameters.binary_data_size`` says how many are its own, in input order (``serving.v2_binary``).
    """
    payload, tail, request_id = read_envelope(body, header_length)
    tensors = payload.get("inputs")
    if tensors is None:
        raise ClientError(400, 'missing "inputs": a list with one tensor per input of the model')
    if not isinstance(tensors, list):
        raise ClientError(400, f"inputs: must be a list with one tensor per input of the model, got {kind(tensors)}")
    reader = v2_binary.BinaryTail(tail) if tail is not None else None
    json_part = body if tail is None else body[: len(body) - len(tail)]
    # JSON booleans come only from these tokens: a body without them skips the (bounded) scan.
    bools = b"true" in json_part or b"false" in json_part
    inputs = []
    try:
        for i, tensor in enumerate(tensors):
            inputs.append(_read_input(tensor, f"inputs[{i}]", reader, bools))
    except TensorDataError as exc:
        raise ClientError(400, str(exc)) from None
    return InferRequest(tuple(inputs), request_id, binary_output=wants_binary_output(payload)), reader


def _read_input(tensor: Any, where: str, reader: v2_binary.BinaryTail | None, bools: bool) -> InferInput:
    if not isinstance(tensor, dict):
        raise ClientError(400, f"{where}: must be an object with name, shape, datatype and data, got {kind(tensor)}")
    no_extra(tensor, INPUT_FIELDS, where)
    check_parameters(tensor, f"{where}.parameters", "binary_data_size")
    binary = "binary_data_size" in (tensor.get("parameters") or {})
    if binary and "data" in tensor:
        raise ClientError(400, f'{where}: give the tensor as "data" or as binary_data_size bytes, not both')
    for key in ("name", "shape", "datatype") if binary else ("name", "shape", "datatype", "data"):
        if key not in tensor:
            raise ClientError(400, f"{where}.{key}: required field is missing")
    raw = None
    if binary:
        if reader is None:
            raise ClientError(
                400,
                f"{where}.parameters.binary_data_size: binary tensor data needs the "
                "Inference-Header-Content-Length header (the size of the JSON part of the body)",
            )
        raw = reader.take(tensor["parameters"]["binary_data_size"], where)
    return InferInput(
        tensor["name"],
        tensor["datatype"],
        tensor["shape"],
        tensor.get("data"),
        raw,
        where=where,
        field=f"{where}.data",
        may_hold_bools=bools,
    )


def wants_binary_output(payload: dict[str, Any]) -> bool:
    """Whether the (one) output goes back as binary: its own parameter, else the request's."""
    outputs = payload.get("outputs") or [{}]
    return v2_binary.binary_outputs_wanted(payload.get("parameters"), outputs[0].get("parameters"))


def _check_requested_outputs(outputs: Any) -> None:
    if not isinstance(outputs, list):
        raise ClientError(400, f'outputs: must be a list of {{"name": ...}} objects, got {kind(outputs)}')
    for i, item in enumerate(outputs):
        where = f"outputs[{i}]"
        if not isinstance(item, dict):
            raise ClientError(400, f'{where}: must be an object with "name", got {kind(item)}')
        no_extra(item, _OUTPUT_FIELDS, where)
        check_parameters(item, f"{where}.parameters", "binary_data")
        check_output_name(item.get("name"), where)


def check_output_name(name: Any, where: str) -> None:
    """A requested output (JSON or gRPC) must be the model's one output."""
    if name != OUTPUT_NAME:
        raise ClientError(400, f'{where}.name: the model has one output, "{OUTPUT_NAME}", got {show(name)}')


def check_raw_contents(raw_count: int, inputs: int, where: str, has_contents: bool) -> None:
    """gRPC's ``raw_input_contents``: one entry per input tensor, and a tensor given only one way."""
    if raw_count and raw_count != inputs:
        raise TensorDataError(f"raw_input_contents: one entry per input is needed ({inputs}), got {raw_count}")
    if raw_count and has_contents:
        raise TensorDataError(
            f"{where}.contents: give the tensor either as raw_input_contents or as typed contents, not both"
        )


def check_parameters(holder: dict[str, Any], where: str, binary_key: str) -> None:
    """``parameters`` is an object; of the binary data extension's keys only ``binary_key`` belongs here."""
    params = holder.get("parameters")
    if params is None:
        return
    if not isinstance(params, dict):
        raise ClientError(400, f"{where}: must be an object, got {kind(params)}")
    for key in ("binary_data", "binary_data_output", "binary_data_size"):
        if key not in params:
            continue
        if key == binary_key or (binary_key == "binary_data" and key == "binary_data_output"):
            if key != "binary_data_size" and not isinstance(params[key], bool):
                raise ClientError(400, f"{where}.{key}: must be true or false, got {show(params[key])}")
        elif params[key]:
            raise ClientError(
                400,
                f"{where}.{key}: not a parameter here; the binary data extension takes "
                "binary_data_size on inputs, binary_data on outputs and binary_data_output on the request",
            )


def no_extra(holder: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    extra = sorted(key for key in holder if key not in allowed)
    if extra:
        raise ClientError(
            400,
            f"{where}: unexpected field(s) {', '.join(map(show, extra))}; allowed: {', '.join(allowed)}",
        )


def encode_infer_response(model_name: str, outputs: np.ndarray, request_id: str | None) -> bytes:
    """The V2 response: one output tensor, data flattened row-major."""
    datatype = V2_DATATYPES.get(outputs.dtype.name, outputs.dtype.name.upper())
    document: dict[str, Any] = {"model_name": model_name, "model_version": "1"}
    if request_id is not None:
        document["id"] = request_id
    check_finite_outputs(outputs)
    flat = np.ascontiguousarray(outputs).reshape(-1)
    document["outputs"] = [{"name": OUTPUT_NAME, "shape": list(outputs.shape), "datatype": datatype, "data": flat}]
    return dumps(document)


def encode_binary_infer_response(model_name: str, outputs: np.ndarray, request_id: str | None) -> tuple[bytes, int]:
    """The V2 response with the output as binary data: (body, length of its JSON header)."""
    check_finite_outputs(outputs)
    document: dict[str, Any] = {"model_name": model_name, "model_version": "1"}
    if request_id is not None:
        document["id"] = request_id
    raw = v2_binary.tensor_to_bytes(outputs)
    document["outputs"] = [
        {
            "name": OUTPUT_NAME,
            "shape": list(outputs.shape),
            "datatype": V2_DATATYPES.get(outputs.dtype.name, outputs.dtype.name.upper()),
            "parameters": {"binary_data_size": len(raw)},
        }
    ]
    return v2_binary.encode_binary_body(encode_json(document).encode(), [raw])


# --- routes ------------------------------------------------------------------------------------

_LIVE = Response(200, b'{"live":true}')
_READY = Response(200, b'{"ready":true}')
_NOT_READY = Response(503, b'{"ready":false}')


def server_live(state: ModelState, request: Request, reply: Reply) -> Response:
    return _LIVE


def server_ready(state: ModelState, request: Request, reply: Reply) -> Response:
    return _READY if state.ready else _NOT_READY


def server_info(state: ModelState, request: Request, reply: Reply) -> Response:
    from serving.state import SERVER_VERSION

    return Response(200, state.memo("v2_server", lambda: encode_json(server_metadata(SERVER_VERSION)).encode()))


def model_metadata(state: ModelState, request: Request, reply: Reply) -> Response:
    return Response(200, model_document(state, "v2_model", model_metadata_document))


def model_ready(state: ModelState, request: Request, reply: Reply) -> Response:
    ready = state.ready
    return Response(200 if ready else 503, encode_json({"name": state.config.model_name, "ready": ready}).encode())


def infer(state: ModelState, request: Request, reply: Reply) -> None:
    run_infer(state, request, reply, lambda body, length: decode_infer(body, state.config.inputs, length))


Decoded = tuple[np.ndarray, Any, bool]  # the batch, the request's id, whether outputs go back binary


def run_infer(
    state: ModelState, request: Request, reply: Reply, decode: Callable[[bytes, str | None], Decoded]
) -> None:
    """An infer request: ``decode`` takes the body and its ``Inference-Header-Content-Length`` (sent at
    most once); the batcher runs the batch and the answer is JSON, or binary when the request asked."""
    batcher = batched(state).batcher
    lengths = request.headers.get_all(v2_binary.HEADER_LENGTH)
    if len(lengths) > 1:
        raise ClientError(400, f"{_HEADER_LENGTH_NAME}: sent {len(lengths)} times; send it once")
    batch, request_id, binary_output = decode(request.body, lengths[0] if lengths else None)
    model_name = state.config.model_name

    def answer(outputs: np.ndarray) -> Response:
        if binary_output:
            body, length = encode_binary_infer_response(model_name, outputs, request_id)
            return Response(200, body, v2_binary.OCTET_STREAM, headers=((_HEADER_LENGTH_NAME, str(length)),))
        return Response(200, encode_infer_response(model_name, outputs, request_id))

    batcher.submit_answer(batch, answer, reply)

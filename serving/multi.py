"""Models with several named inputs: requests to one batch of named tensors, through both protocols.

A batch is a numpy structured array with one field per input (``batch["user_id"]`` is that
input's ``(n, *shape)`` tensor), so the batcher concatenates and splits it like any array and
the runtimes read each input by name. Single-input models never come here: ``serving.predict`` swaps
these handlers in only for a model with several inputs.

Integer inputs (ids) take integers only: a JSON float, or a V2 floating-point datatype, is a 400
naming the input, even when the value is whole. An input whose sample shape is ``[1]`` may be
sent as a bare value per sample (``{"user_id": 3}``, ``"inputs": {"user_id": [3, 4]}``, V2 shape
``[n]``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from serving import v1, v2
from serving.batched import model_document
from serving.config import InputSpec, ServingConfig
from serving.errors import ClientError, kind, show
from serving.feeds import pack
from serving.messages import Request, Response
from serving.tensors import parse_json, to_batch

if TYPE_CHECKING:
    from serving.runtime import Runtime
    from serving.state import ModelState

Reply = Callable[[Callable[[], Response]], None]


def is_multi(config: ServingConfig) -> bool:
    """Whether the config's model takes several inputs (this module's requests)."""
    return len(config.inputs) > 1


# --- checks shared by the protocols --------------------------------------------------------------


def _names(inputs: Sequence[InputSpec]) -> str:
    return ", ".join(f'"{spec.name}"' for spec in inputs)


def _check_names(given: Sequence[str], inputs: Sequence[InputSpec], where: str) -> None:
    """Every input exactly once, nothing else."""
    known = {spec.name for spec in inputs}
    for name in given:
        if name not in known:
            raise ClientError(
                400, f"{where}: unexpected input {show(name)}; this model takes {_names(inputs)}"
            )
    seen: set[str] = set()
    for name in given:
        if name in seen:
            raise ClientError(400, f'{where}: input "{name}" is given more than once')
        seen.add(name)
    for spec in inputs:
        if spec.name not in seen:
            raise ClientError(
                400, f'{where}: missing input "{spec.name}"; this model takes {_names(inputs)}'
            )


def _same_batch(arrays: Mapping[str, np.ndarray], inputs: Sequence[InputSpec], where: str) -> None:
    first = inputs[0].name
    n = len(arrays[first])
    for spec in inputs[1:]:
        if len(arrays[spec.name]) != n:
            raise ClientError(
                400,
                f'{where}: input "{spec.name}" has {len(arrays[spec.name])} samples but "{first}" has '
                f"{n}; every input needs the same batch size",
            )


def _integers_only(array: np.ndarray, spec: InputSpec, field: str) -> None:
    if np.dtype(spec.dtype).kind in "iu" and array.dtype.kind == "f":
        raise ClientError(400, f'{field}: input "{spec.name}" takes integers ({spec.dtype}), got numbers with a fraction or exponent')


def _json_tensor(data: Any, spec: InputSpec, field: str) -> np.ndarray:
    """One input's samples from JSON: checked against the spec, integer inputs integers only."""
    if spec.shape == (1,) and isinstance(data, list) and data and not isinstance(data[0], list):
        data = [[value] for value in data]  # bare values, one per sample
    array = to_batch(data, spec, field)
    if np.dtype(spec.dtype).kind in "iu":
        sent = np.asarray(data)
        _integers_only(sent, spec, field)
    return array


# --- TF Serving REST ------------------------------------------------------------------------------


def decode_predict(body: bytes, inputs: Sequence[InputSpec]) -> tuple[np.ndarray, bool]:
    """A TF Serving predict body for several inputs: (batch, whether it was row format)."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ClientError(400, f'the body must be a JSON object with "instances" or "inputs", got {kind(payload)}')
    v1.check_predict_fields(payload)
    if ("instances" in payload) == ("inputs" in payload):
        raise ClientError(
            400, 'give either "instances" (row format) or "inputs" (columnar format), not both and not neither'
        )
    arrays: dict[str, np.ndarray] = {}
    if "instances" in payload:
        instances = payload["instances"]
        if not isinstance(instances, list) or not instances:
            raise ClientError(
                400, f'"instances" must be a non-empty array of objects with the inputs {_names(inputs)}'
            )
        for i, instance in enumerate(instances):
            if not isinstance(instance, dict):
                raise ClientError(
                    400, f"instances[{i}]: expected an object with the inputs {_names(inputs)}, got {show(instance)}"
                )
            _check_names(list(instance), inputs, f"instances[{i}]")
        for spec in inputs:
            column = [instance[spec.name] for instance in instances]
            arrays[spec.name] = _json_tensor(column, spec, f"instances[*].{spec.name}")
        return pack(inputs, arrays), True
    columns = payload["inputs"]
    if not isinstance(columns, dict):
        raise ClientError(
            400, f'"inputs" must be an object with one batch per input ({_names(inputs)}), got {kind(columns)}'
        )
    _check_names(list(columns), inputs, '"inputs"')
    for spec in inputs:
        arrays[spec.name] = _json_tensor(columns[spec.name], spec, f"inputs.{spec.name}")
    _same_batch(arrays, inputs, '"inputs"')
    return pack(inputs, arrays), False


def v1_metadata_document(config: ServingConfig, model: Runtime) -> dict[str, Any]:
    """TF Serving's metadata with every input of the signature."""
    document = v1.metadata_document(config, model)
    signature = document["metadata"]["signature_def"]["signature_def"]["serving_default"]
    signature["inputs"] = {spec.name: v1.tensor_info(spec.name, spec.dtype, spec.shape) for spec in config.inputs}
    return document


def v1_metadata(state: ModelState, request: Request, reply: Reply) -> Response:
    return Response(200, model_document(state, "v1_metadata", v1_metadata_document))


def v1_predict(state: ModelState, request: Request, reply: Reply) -> None:
    v1.run_predict(state, request, reply, lambda body: decode_predict(body, state.config.inputs))


# --- Open Inference Protocol V2 (HTTP JSON / binary, gRPC): serving.request binds every input -----


def decode_infer(
    body: bytes, inputs: Sequence[InputSpec], header_length: str | None = None
) -> tuple[np.ndarray, str | None, bool]:
    """A V2 infer body (JSON, or the binary extension's) for several inputs: (batch, id, binary output)."""
    return v2.decode_infer(body, inputs, header_length)

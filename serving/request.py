"""One inference request between every transport and the model, and the one step that binds it.

Every transport (TF Serving's V1 JSON, the V2 JSON body, the V2 binary extension, V2 gRPC)
decodes into an ``InferRequest`` of ``InferInput`` s (KServe's shape: name, datatype, shape, data
or raw bytes), its requested outputs and parameters. ``bind`` then checks the request against
the model's inputs (names, datatypes, shapes, integer ranges, texts), each the same way, and makes
the batch (``serving.feeds.batch``). A model with one input is the case of a list of one.

Rules that hold for every transport:

- every input of the model exactly once, nothing else, all with the same number of samples;
- an input whose sample shape is ``[1]`` may be sent as a bare value per sample (V2 shape ``[n]``,
  V1 ``[3, 4]`` or ``{"user_id": 3}``);
- a model with several inputs takes its integer inputs (ids) as integers only: a JSON float or a
  floating-point datatype is refused naming the input, even when the value is whole. A one-input
  model's integer input takes integral values (e.g. pixels written from a float array);
- every problem is a ``ClientError`` (400) naming the request part.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from serving.bytes_tensors import TensorDataError
from serving.config import InputSpec
from serving.errors import ClientError, show
from serving.feeds import batch
from serving.tensors import V2_DATATYPES, V2_NUMPY, cast, check_input_tensor, check_integers, tensor_array, to_batch
from serving.text import text_batch, text_tensor
from serving.v2_binary import tensor_from_bytes

_INTEGER_DTYPES = frozenset(("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"))
# Typed contents (gRPC), read once the shape is checked: (checked shape, where) -> array of that shape.
Contents = Callable[[list[int], str], np.ndarray]


@dataclass(slots=True)  # not frozen: a frozen dataclass's __init__ costs several times more
class InferInput:
    """One named input tensor as a transport received it.

    ``datatype`` and ``shape`` are as sent (V2), or None when the transport has none (V1 JSON: the
    values carry their nesting). Exactly one of ``data`` (JSON values, nested or flat), ``raw``
    (row-major little-endian bytes) and ``contents`` (gRPC typed contents) holds the values.
    ``where`` locates the tensor in the request and ``field`` its values, for messages;
    ``may_hold_bools`` False says the JSON body had no ``true``/``false`` token (no boolean to look for).
    """

    name: Any
    datatype: Any = None
    shape: Any = None
    data: Any = None
    raw: bytes | memoryview | None = None
    contents: Contents | None = None
    where: str = "inputs[0]"
    field: str = "inputs[0].data"
    may_hold_bools: bool = True


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for by name (V2), and whether it goes back as binary."""

    name: Any
    binary: bool = False


@dataclass(slots=True)
class InferRequest:
    """Named inputs, the request's id (V2), requested outputs and parameters."""

    inputs: tuple[InferInput, ...]
    id: str | None = None
    outputs: tuple[RequestedOutput, ...] = ()
    parameters: Mapping[str, Any] = field(default_factory=dict)
    binary_output: bool = False  # the (one) output goes back in the binary extension's framing


def bind(request: InferRequest, inputs: Sequence[InputSpec], where: str = "inputs") -> np.ndarray:
    """The request checked against the model's ``inputs``, as one batch (see the module's rules)."""
    specs = {spec.name: spec for spec in inputs}
    integers_only = ids_only(inputs)
    arrays: dict[str, np.ndarray] = {}
    for tensor in request.inputs:
        name = tensor.name
        spec = specs.get(name) if isinstance(name, str) else None
        if spec is None:
            raise ClientError(
                400, f"{tensor.where}.name: unexpected input {show(name)}; this model takes {names(inputs)}"
            )
        if name in arrays:
            raise ClientError(400, f'{where}: input "{name}" is given more than once')
        arrays[name] = bind_input(tensor, spec, integers_only)
    for spec in inputs:
        if spec.name not in arrays:
            raise ClientError(400, f'{where}: missing input "{spec.name}"; this model takes {names(inputs)}')
    same_batch(arrays, inputs, where)
    return batch(inputs, arrays)


def ids_only(inputs: Sequence[InputSpec]) -> bool:
    """Whether integer inputs take integers only: a model's integer inputs beside others are ids
    (an integral float is refused, naming the input); a lone integer input takes integral values,
    e.g. pixels written from a float array. The module's rules; tested both ways."""
    return len(inputs) > 1


def bind_input(tensor: InferInput, spec: InputSpec, integers_only: bool) -> np.ndarray:
    """One input's samples, checked against its spec and cast to its dtype."""
    if spec.dtype == "string":  # text: one string per sample (serving.text)
        if tensor.shape is None:
            return text_batch(tensor.data, tensor.field)
        if tensor.contents is not None:
            raise ClientError(
                400, f'{tensor.where}.datatype: input "{spec.name}" takes text as BYTES, got {show(tensor.datatype)}'
            )
        return text_tensor(tensor.name, tensor.shape, tensor.datatype, tensor.data, tensor.raw, spec.name, tensor.where)
    integers_only = integers_only and spec.dtype in _INTEGER_DTYPES
    bare = spec.shape == (1,)
    if tensor.shape is None:  # V1 JSON: the nesting is the shape
        data = tensor.data
        if bare and isinstance(data, list) and data and not isinstance(data[0], list):
            data = [[value] for value in data]  # bare values, one per sample
        array = to_batch(data, spec, tensor.field, tensor.may_hold_bools)
        if integers_only and np.asarray(data).dtype.kind == "f":
            raise ClientError(400, _not_integers(spec, tensor.field))
        return array
    shape, datatype, place = tensor.shape, tensor.datatype, tensor.where
    if bare and isinstance(shape, list) and len(shape) == 1:
        shape = [*shape, 1]  # bare values, one per sample
    check_input_tensor(tensor.name, shape, datatype, spec, place)
    if integers_only and not str(datatype).startswith(("INT", "UINT")):
        raise ClientError(
            400,
            f'{place}.datatype: input "{spec.name}" takes integers ({V2_DATATYPES[spec.dtype]}), got {show(datatype)}',
        )
    try:
        if tensor.raw is not None:
            return cast(tensor_from_bytes(tensor.raw, datatype, shape, place), spec, place)
        if tensor.contents is not None:
            return cast(tensor.contents(shape, place), spec, place)
    except TensorDataError as exc:
        raise ClientError(400, str(exc)) from None
    array = tensor_array(tensor.data, shape, tensor.field, spec.name, tensor.may_hold_bools)
    if integers_only and array.dtype.kind == "f":
        raise ClientError(400, _not_integers(spec, tensor.field))
    sent = V2_NUMPY[datatype]
    if sent.kind in "iu":
        check_integers(array, sent, tensor.field, f"datatype {datatype}")
    return cast(array, spec, tensor.field)


def _not_integers(spec: InputSpec, field: str) -> str:
    return f'{field}: input "{spec.name}" takes integers ({spec.dtype}), got numbers with a fraction or exponent'


# --- checks of a request's inputs as a whole ------------------------------------------------------


def names(inputs: Sequence[InputSpec]) -> str:
    """The model's input names, quoted, for messages."""
    return ", ".join(f'"{spec.name}"' for spec in inputs)


def check_names(given: Sequence[Any], inputs: Sequence[InputSpec], where: str) -> None:
    """Every input exactly once, nothing else."""
    known = {spec.name for spec in inputs}
    for name in given:
        if name not in known:
            raise ClientError(400, f"{where}: unexpected input {show(name)}; this model takes {names(inputs)}")
    seen: set[str] = set()
    for name in given:
        if name in seen:
            raise ClientError(400, f'{where}: input "{name}" is given more than once')
        seen.add(name)
    for spec in inputs:
        if spec.name not in seen:
            raise ClientError(400, f'{where}: missing input "{spec.name}"; this model takes {names(inputs)}')


def same_batch(arrays: Mapping[str, np.ndarray], inputs: Sequence[InputSpec], where: str) -> None:
    """Every input holds the same number of samples."""
    first = inputs[0].name
    n = len(arrays[first])
    for spec in inputs[1:]:
        if len(arrays[spec.name]) != n:
            raise ClientError(
                400,
                f'{where}: input "{spec.name}" has {len(arrays[spec.name])} samples but "{first}" has '
                f"{n}; every input needs the same batch size",
            )

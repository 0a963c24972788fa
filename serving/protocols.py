"""Request decoding and response documents for the two HTTP APIs: pure functions, no I/O.

TensorFlow Serving REST (``/v1``): ``decode_predict_request`` (row ``instances`` and columnar
``inputs`` forms), ``status_body``, ``metadata_document``.

Open Inference Protocol V2 (``/v2``, KServe's HTTP/REST JSON form): ``decode_infer_request``,
``encode_infer_response``, ``v2_model_metadata``, ``v2_server_metadata``. Tensor ``data`` may be
flat (row-major) or nested in the tensor's shape; the binary-data extension is not supported.

Every problem with a request raises ``ClientError`` (a 4xx with a message naming the field, the
tensor and what was expected); nothing here raises anything else for client input.
"""

from __future__ import annotations

import json
import math
import re
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from serving.config import InputSpec, ServingConfig

if TYPE_CHECKING:
    from serving.runtime import Runtime

_PREDICT_FIELDS = ("instances", "inputs", "signature_name")
_TF_DTYPES = {
    "float32": "DT_FLOAT", "float16": "DT_HALF", "float64": "DT_DOUBLE", "int8": "DT_INT8",
    "uint8": "DT_UINT8", "int16": "DT_INT16", "int32": "DT_INT32", "int64": "DT_INT64",
    "bool": "DT_BOOL",
}
encode_json = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode

try:  # optional: the image installs it; without it the standard library does the work
    import orjson

    _orjson_loads: Any = orjson.loads
    _orjson_dumps: Any = orjson.dumps
    _ORJSON_NUMPY = orjson.OPT_SERIALIZE_NUMPY
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_loads = _orjson_dumps = None
    _ORJSON_NUMPY = 0


_LONG_DIGITS = re.compile(rb"[0-9]{20}")


def encode_outputs(key: str, outputs: np.ndarray) -> bytes:
    """``{"<key>": outputs}`` as JSON bytes; a model output that is not finite is a server error."""
    if outputs.dtype.kind == "f" and not np.isfinite(outputs).all():
        raise ValueError("the model produced NaN or infinite outputs")
    if _orjson_dumps is not None and outputs.dtype.kind in "fiu":
        return _orjson_dumps({key: np.ascontiguousarray(outputs)}, option=_ORJSON_NUMPY)
    return encode_json({key: outputs.tolist()}).encode()

# --- request decoding (pure functions) ---------------------------------------------------------


class ClientError(Exception):
    """A request problem answered with a 4xx/503 JSON error; ``close`` ends the connection."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        close: bool = False,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.close = close
        self.headers = headers


class _NonFiniteNumber(ValueError):
    pass


def _reject_constant(name: str) -> float:
    # Python's json accepts NaN/Infinity by default; they are not JSON and not valid features.
    raise _NonFiniteNumber(f"{name} is not allowed; send finite numbers")


_json_decoder = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json(body: bytes) -> Any:
    """Parse a request body, turning every decoding failure into a 400.

    orjson (when installed, as in the image) parses valid bodies several times faster; anything
    it refuses is parsed again by the standard library, which either accepts it (e.g. integers
    beyond 64 bits, which the checks after parsing then reject with a message) or explains
    what is wrong, so the answer does not depend on which parser ran. orjson reads integers
    beyond 64 bits as floats, so bodies with 20 digits in a row go to the standard library.
    """
    if _orjson_loads is not None and _LONG_DIGITS.search(body) is None:
        try:
            return _orjson_loads(body)
        except ValueError:  # orjson.JSONDecodeError is a ValueError
            pass
    try:
        return _json_decoder.decode(body.decode("utf-8"))
    except _NonFiniteNumber as exc:
        raise ClientError(400, f"malformed JSON: {exc}") from None
    except UnicodeDecodeError:
        raise ClientError(400, "malformed JSON: the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ClientError(400, f"malformed JSON: {exc}") from None
    except RecursionError:
        raise ClientError(400, "malformed JSON: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's 4300-digit limit
        raise ClientError(400, f"malformed JSON: {exc}") from None


def decode_predict_request(body: bytes, spec: InputSpec) -> tuple[np.ndarray, bool]:
    """Turn a TF Serving predict body into an input batch; also say whether it was row format."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ClientError(
            400, f'the body must be a JSON object with "instances" or "inputs", got {_kind(payload)}'
        )
    extra = sorted(key for key in payload if key not in _PREDICT_FIELDS)
    if extra:
        raise ClientError(
            400,
            f"unexpected field(s) {', '.join(map(_show, extra))}; the body takes "
            '"instances" (row format) or "inputs" (columnar format)',
        )
    signature = payload.get("signature_name", "serving_default")
    if signature != "serving_default":
        raise ClientError(
            400, f'signature_name: only "serving_default" is served, got {_show(signature)}'
        )
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
    # JSON booleans can only come from these tokens, so bodies without them skip the bool scan.
    may_hold_bools = b"true" in body or b"false" in body
    return to_batch(data, spec, field, may_hold_bools), row_format


def _unwrap_rows(instances: Any, name: str) -> Any:
    """Row format: each instance is the sample itself or {"<name>": sample}."""
    if not isinstance(instances, list) or not instances:
        raise ClientError(
            400,
            f'"instances" must be a non-empty array of samples for input "{name}", '
            f"got {_kind(instances) if not isinstance(instances, list) else 'an empty array'}",
        )
    if not isinstance(instances[0], dict):
        return instances  # non-numeric entries are reported by to_batch
    samples = []
    for i, instance in enumerate(instances):
        if not isinstance(instance, dict) or instance.keys() != {name}:
            raise ClientError(
                400,
                f'instances[{i}]: expected an object with the single key "{name}" (the model\'s '
                f"input), got {_show(instance)}",
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
                f"got keys {_show(sorted(inputs))}",
            )
        return inputs[name]
    return inputs


def to_batch(data: Any, spec: InputSpec, field: str, may_hold_bools: bool = True) -> np.ndarray:
    """Validate nested lists against the input spec and convert them to a batch array."""
    array = _flat_numeric(data, spec)
    if array is None:
        try:
            array = np.asarray(data)
        except (ValueError, TypeError, OverflowError):  # ragged nesting, odd objects
            array = None
    fits = array is not None and _numeric_batch_of(array, spec.shape)
    if not fits or may_hold_bools:
        # The slow walk runs only on failure (or possible booleans), to name the bad value.
        problem = _find_problem(data, spec, field)
        if problem:
            raise ClientError(400, problem)
    if array is None or not fits:  # the walk mirrors numpy's checks, so this is a backstop
        raise ClientError(
            400, f'{field}: input "{spec.name}" must be a numeric array of shape {[-1, *spec.shape]}'
        )
    return _cast(array, spec, field)


def _flat_numeric(data: Any, spec: InputSpec) -> np.ndarray | None:
    """Fast path: nested lists of exactly ``[n, *spec.shape]`` numbers as an array, else None.

    ``np.asarray`` on nested lists inspects every level element by element; checking each
    level's types and lengths and flattening it with ``itertools.chain`` runs in C, and numpy
    then converts one flat list (straight to float32 for a float32 input). Anything unusual
    returns None and takes the general path, which also produces the error messages.
    """
    if not isinstance(data, list) or not data:
        return None
    level: Any = data
    try:
        for want in spec.shape:
            if set(map(type, level)) != {list} or set(map(len, level)) != {want}:
                return None
            level = list(chain.from_iterable(level))
        if spec.dtype == "float32":
            # Leaves that are not int/float (str, None, nested lists) make fromiter raise;
            # booleans are caught by the caller's scan; overflow to inf by the finite check.
            types = set(map(type, level))
            if not types <= {int, float}:
                return None
            if int in types and not -(2**63) <= min(level) <= max(level) < 2**63:
                return None  # the general path names the out-of-range integer
            with np.errstate(over="ignore"):
                flat = np.fromiter(level, dtype=np.float32, count=len(level))
        else:
            flat = np.array(level)
    except (TypeError, ValueError, OverflowError):
        return None
    if flat.ndim != 1 or flat.dtype.kind not in "iuf":
        return None
    return flat.reshape(len(data), *spec.shape)


def _numeric_batch_of(array: np.ndarray, sample_shape: tuple[int, ...]) -> bool:
    return (
        array.dtype.kind in "iuf"
        and array.ndim == len(sample_shape) + 1
        and array.shape[0] > 0
        and array.shape[1:] == sample_shape
    )


def _find_problem(data: Any, spec: InputSpec, field: str) -> str | None:
    """Walk the nested lists and describe the first value that does not fit the spec."""
    dims: tuple[int | None, ...] = (None, *spec.shape)  # None: any non-zero batch size
    stack: list[tuple[Any, str, int]] = [(data, field, 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth == len(dims):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f'{path}: expected a number for input "{spec.name}", got {_show(value)}'
            if isinstance(value, int) and not -(2**63) <= value < 2**64:
                return f"{path}: integer {_show(value)} is out of range for {spec.dtype}"
            continue
        want = dims[depth]
        if not isinstance(value, list):
            return (
                f'{path}: expected an array (input "{spec.name}" takes shape '
                f"{[-1, *spec.shape]}), got {_show(value)}"
            )
        if want is None and not value:
            return f"{path}: expected a non-empty batch of samples, got an empty array"
        if want is not None and len(value) != want:
            return (
                f"{path}: expected {want} values (input \"{spec.name}\" takes samples of shape "
                f"{list(spec.shape)}), got {len(value)}"
            )
        stack.extend((value[i], f"{path}[{i}]", depth + 1) for i in range(len(value) - 1, -1, -1))
    return None


def _cast(array: np.ndarray, spec: InputSpec, field: str) -> np.ndarray:
    """Cast to the input's dtype, rejecting values that do not survive the cast."""
    target = np.dtype(spec.dtype)
    if target.kind == "f":
        with np.errstate(over="ignore"):
            batch = array.astype(target)
        if not np.isfinite(batch).all():
            raise ClientError(
                400,
                f'{field}: input "{spec.name}" has non-finite values (NaN, Infinity or outside '
                f"the {spec.dtype} range); send finite numbers",
            )
        return batch
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.trunc(array)).all()):
        raise ClientError(400, f'{field}: input "{spec.name}" takes integers ({spec.dtype})')
    info = np.iinfo(target)
    if array.min() < info.min or array.max() > info.max:
        raise ClientError(
            400, f'{field}: input "{spec.name}" takes {spec.dtype} values in {info.min}..{info.max}'
        )
    return array.astype(target)


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, str):
        return "a string"
    return _show(value)


def _show(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- model state and response documents --------------------------------------------------------


def error_body(message: str) -> bytes:
    return encode_json({"error": message}).encode()


def status_body(state: str) -> bytes:
    return encode_json(
        {
            "model_version_status": [
                {"version": "1", "state": state, "status": {"error_code": "OK", "error_message": ""}}
            ]
        }
    ).encode()


def _tensor_info(name: str, dtype: str, shape: tuple[int, ...]) -> dict[str, Any]:
    dims = [{"size": str(size), "name": ""} for size in (-1, *shape)]
    return {
        "dtype": _TF_DTYPES.get(dtype, dtype),
        "tensor_shape": {"dim": dims, "unknown_rank": False},
        "name": name,
    }


def metadata_document(config: ServingConfig, model: Runtime) -> dict[str, Any]:
    """TF Serving's metadata response, plus the config's metadata under "modelstack"."""
    spec = config.input
    signature = {
        "inputs": {spec.name: _tensor_info(spec.name, spec.dtype, spec.shape)},
        "outputs": {
            "output_0": _tensor_info("output_0", model.output_dtype.name, model.output_shape)
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


# --- Open Inference Protocol V2 ------------------------------------------------------------------

# numpy dtype name -> V2 datatype, and back (BOOL and BYTES are not model inputs here).
V2_DATATYPES = {
    "float16": "FP16", "float32": "FP32", "float64": "FP64", "int8": "INT8", "int16": "INT16",
    "int32": "INT32", "int64": "INT64", "uint8": "UINT8", "uint16": "UINT16", "uint32": "UINT32",
    "uint64": "UINT64", "bool": "BOOL",
}
_V2_NUMPY = {v2: np.dtype(name) for name, v2 in V2_DATATYPES.items() if v2 != "BOOL"}
_V2_REQUEST_FIELDS = ("id", "parameters", "inputs", "outputs")
_V2_INPUT_FIELDS = ("name", "shape", "datatype", "data", "parameters")
_V2_OUTPUT_FIELDS = ("name", "parameters")
OUTPUT_NAME = "output_0"


def v2_server_metadata(version: str) -> dict[str, Any]:
    return {"name": "modelstack", "version": version, "extensions": []}


def v2_model_metadata(config: ServingConfig, model: Runtime) -> dict[str, Any]:
    spec = config.input
    return {
        "name": config.model_name,
        "versions": ["1"],
        "platform": model.platform,
        "inputs": [
            {"name": spec.name, "datatype": V2_DATATYPES[spec.dtype], "shape": [-1, *spec.shape]}
        ],
        "outputs": [
            {
                "name": OUTPUT_NAME,
                "datatype": V2_DATATYPES.get(model.output_dtype.name, model.output_dtype.name.upper()),
                "shape": [-1, *model.output_shape],
            }
        ],
    }


def decode_infer_request(body: bytes, spec: InputSpec) -> tuple[np.ndarray, str | None]:
    """Turn a V2 infer body into an input batch; also return the request's ``id`` (or None)."""
    payload = parse_json(body)
    if not isinstance(payload, dict):
        raise ClientError(400, f'the body must be a JSON object with "inputs", got {_kind(payload)}')
    _no_extra(payload, _V2_REQUEST_FIELDS, "the request")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ClientError(400, f"id: must be a string, got {_show(request_id)}")
    _check_parameters(payload, "parameters")
    if "outputs" in payload:
        _check_requested_outputs(payload["outputs"])
    inputs = payload.get("inputs")
    if inputs is None:
        raise ClientError(400, f'missing "inputs": a list with one tensor named "{spec.name}"')
    if not isinstance(inputs, list) or len(inputs) != 1:
        got = f"{len(inputs)} tensors" if isinstance(inputs, list) else _kind(inputs)
        raise ClientError(
            400, f'inputs: must be a list with exactly one tensor named "{spec.name}", got {got}'
        )
    tensor = inputs[0]
    where = "inputs[0]"
    if not isinstance(tensor, dict):
        raise ClientError(
            400, f"{where}: must be an object with name, shape, datatype and data, got {_kind(tensor)}"
        )
    _no_extra(tensor, _V2_INPUT_FIELDS, where)
    for key in ("name", "shape", "datatype", "data"):
        if key not in tensor:
            raise ClientError(400, f"{where}.{key}: required field is missing")
    _check_parameters(tensor, f"{where}.parameters")
    if tensor["name"] != spec.name:
        raise ClientError(
            400, f'{where}.name: this model\'s input is "{spec.name}", got {_show(tensor["name"])}'
        )
    expected = [-1, *spec.shape]
    shape = tensor["shape"]
    if not (
        isinstance(shape, list)
        and len(shape) == len(expected)
        and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        and shape[0] >= 1
        and list(shape[1:]) == list(spec.shape)
    ):
        raise ClientError(
            400,
            f'{where}.shape: input "{spec.name}" takes shape {expected} (batch first, at least 1), '
            f"got {_show(shape)}",
        )
    datatype = tensor["datatype"]
    if datatype not in _V2_NUMPY:
        raise ClientError(
            400,
            f'{where}.datatype: input "{spec.name}" takes {V2_DATATYPES[spec.dtype]} (or another '
            f"numeric type: {', '.join(_V2_NUMPY)}), got {_show(datatype)}",
        )
    data = tensor["data"]
    array = _v2_array(data, shape, f"{where}.data", spec.name, may_hold_bools=b"true" in body or b"false" in body)
    sent = _V2_NUMPY[datatype]
    if sent.kind in "iu":
        field = f"{where}.data"
        if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.trunc(array)).all()):
            raise ClientError(400, f'{field}: datatype {datatype} takes integers')
        info = np.iinfo(sent)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ClientError(400, f"{field}: datatype {datatype} takes values in {info.min}..{info.max}")
    return _cast(array, spec, f"{where}.data"), request_id


def _v2_array(data: Any, shape: list[int], field: str, name: str, may_hold_bools: bool) -> np.ndarray:
    """The tensor data as an array of ``shape``: flat row-major or nested in that shape."""
    if not isinstance(data, list):
        raise ClientError(400, f'{field}: must be an array of numbers for input "{name}", got {_kind(data)}')
    count = math.prod(shape)
    try:
        array: np.ndarray | None = np.asarray(data)
    except (ValueError, TypeError, OverflowError):  # ragged nesting, odd objects
        array = None
    if array is None or array.dtype.kind not in "iuf" or may_hold_bools:
        problem = _first_non_number(data, field)
        if problem:
            raise ClientError(400, f'{problem} (input "{name}")')
        if array is None or array.dtype.kind not in "iuf":
            raise ClientError(
                400, f'{field}: input "{name}" must be numbers, flat or nested in shape {shape}'
            )
    if array.ndim != 1 and list(array.shape) != list(shape):
        raise ClientError(
            400, f"{field}: nested data has shape {list(array.shape)}, but shape says {shape}; "
            "send it flat (row-major) or nested in that shape",
        )
    if array.size != count:
        raise ClientError(
            400, f"{field}: shape {shape} needs {count} values, got {array.size}"
        )
    return array.reshape(shape)


def _first_non_number(data: Any, field: str) -> str | None:
    """Describe the first leaf that is not a number, walking iteratively (no recursion)."""
    stack: list[tuple[Any, str]] = [(data, field)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, list):
            stack.extend((value[i], f"{path}[{i}]") for i in range(len(value) - 1, -1, -1))
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{path}: expected a number, got {_show(value)}"
        elif isinstance(value, int) and not -(2**63) <= value < 2**64:
            return f"{path}: integer {_show(value)} is out of range"
    return None


def _check_requested_outputs(outputs: Any) -> None:
    if not isinstance(outputs, list):
        raise ClientError(400, f"outputs: must be a list of {{\"name\": ...}} objects, got {_kind(outputs)}")
    for i, item in enumerate(outputs):
        where = f"outputs[{i}]"
        if not isinstance(item, dict):
            raise ClientError(400, f'{where}: must be an object with "name", got {_kind(item)}')
        _no_extra(item, _V2_OUTPUT_FIELDS, where)
        _check_parameters(item, f"{where}.parameters")
        if item.get("name") != OUTPUT_NAME:
            raise ClientError(
                400, f'{where}.name: the model has one output, "{OUTPUT_NAME}", got {_show(item.get("name"))}'
            )


def _check_parameters(holder: dict[str, Any], where: str) -> None:
    params = holder.get("parameters")
    if params is None:
        return
    if not isinstance(params, dict):
        raise ClientError(400, f"{where}: must be an object, got {_kind(params)}")
    for key in ("binary_data", "binary_data_output", "binary_data_size"):
        if params.get(key):
            raise ClientError(
                400, f"{where}.{key}: the binary tensor data extension is not supported; send JSON data"
            )


def _no_extra(holder: dict[str, Any], allowed: tuple[str, ...], where: str) -> None:
    extra = sorted(key for key in holder if key not in allowed)
    if extra:
        raise ClientError(
            400,
            f"{where}: unexpected field(s) {', '.join(map(_show, extra))}; allowed: {', '.join(allowed)}",
        )


def encode_infer_response(model_name: str, outputs: np.ndarray, request_id: str | None) -> bytes:
    """The V2 response: one output tensor, data flattened row-major."""
    datatype = V2_DATATYPES.get(outputs.dtype.name, outputs.dtype.name.upper())
    document: dict[str, Any] = {"model_name": model_name, "model_version": "1"}
    if request_id is not None:
        document["id"] = request_id
    if outputs.dtype.kind == "f" and not np.isfinite(outputs).all():
        raise ValueError("the model produced NaN or infinite outputs")
    flat = np.ascontiguousarray(outputs).reshape(-1)
    document["outputs"] = [
        {"name": OUTPUT_NAME, "shape": list(outputs.shape), "datatype": datatype, "data": flat}
    ]
    if _orjson_dumps is not None and flat.dtype.kind in "fiu":
        return _orjson_dumps(document, option=_ORJSON_NUMPY)
    document["outputs"][0]["data"] = flat.tolist()
    return encode_json(document).encode()

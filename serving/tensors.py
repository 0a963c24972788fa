"""JSON bodies to numpy batches and back, shared by both protocols: parsing, shape walks, checked casts.

Every problem with client data raises ``ClientError`` (400) naming the field and the value;
nothing here raises anything else for client input.
"""

from __future__ import annotations

import json
import math
from itertools import chain
from typing import Any

import numpy as np

from serving.config import InputSpec
from serving.errors import ClientError, encode_json, kind, show

try:  # optional: the image installs it; without it the standard library does the work
    import orjson

    _orjson_loads: Any = orjson.loads
    _orjson_dumps: Any = orjson.dumps
    _ORJSON_NUMPY = orjson.OPT_SERIALIZE_NUMPY
except ImportError:  # pragma: no cover - depends on the environment
    _orjson_loads = _orjson_dumps = None
    _ORJSON_NUMPY = 0

# numpy dtype name -> V2 datatype, and back (BOOL and BYTES are not model inputs here).
V2_DATATYPES = {
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "bool": "BOOL",
}
V2_NUMPY = {v2: np.dtype(name) for name, v2 in V2_DATATYPES.items() if v2 != "BOOL"}
MAX_BATCH_DIM = 2**63 - 1  # an int64 dimension, as gRPC's shapes are: element counts stay printable

# Digits -> "1", every other byte -> "0": a run of digits is then a substring search.
_DIGIT_MAP = bytes(49 if 48 <= i <= 57 else 48 for i in range(256))
# Integers orjson cannot hold exactly are above 2**64 - 1 (20 digits) or below -2**63 (19 digits
# after a minus sign). A shorter run of digits cannot be one, so the scan looks for 19 in a row.
_RUN_19 = b"1" * 19
_DOT, _MINUS, _NOT_INTEGER_AFTER = ord("."), ord("-"), frozenset(b".eE")
_MAX_UINT64, _MIN_INT64 = str(2**64 - 1).encode(), str(2**63).encode()


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
    beyond 64 bits as floats, so bodies holding one go to the standard library.
    """
    if _orjson_loads is not None and not has_wide_integer(body):
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


def has_wide_integer(body: bytes) -> bool:
    """Whether ``body`` holds an integer literal outside -2**63..2**64-1 (orjson would make it a float).

    Long digit runs are common in float bodies: ``json.dumps`` writes a float32 value such as
    0.000190001606 with 17 significant digits, 20 digits in a row after the point. Those are
    fractions, and orjson reads them exactly; only a run that is a whole integer literal (no
    point before it, no point or exponent after it) counts.
    """
    digits = body.translate(_DIGIT_MAP)
    size = len(body)
    start = digits.find(_RUN_19)
    while start >= 0:
        end = digits.find(b"0", start)
        if end < 0:
            end = size
        before = body[start - 1] if start else 0
        if before != _DOT and (end == size or body[end] not in _NOT_INTEGER_AFTER):
            run = body[start:end]  # same-length digit strings compare as their numbers
            if len(run) > 20 or (len(run) == 20 and run > _MAX_UINT64) or (before == _MINUS and run > _MIN_INT64):
                return True
        start = digits.find(_RUN_19, end)
    return False


def dumps(document: dict[str, Any]) -> bytes:
    """A response document as JSON bytes; numpy arrays in it are written as (nested) lists."""
    if _orjson_dumps is not None:
        try:
            return _orjson_dumps(document, option=_ORJSON_NUMPY)
        except TypeError:  # a dtype orjson does not write (orjson.JSONEncodeError is a TypeError)
            pass
    return encode_json(_tolists(document)).encode()


def _tolists(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {k: _tolists(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_tolists(v) for v in value]
    return value


def check_finite_outputs(outputs: np.ndarray) -> None:
    """A model output that is not finite is a server error (JSON cannot carry it)."""
    if outputs.dtype.kind == "f" and not np.isfinite(outputs).all():
        raise ValueError("the model produced NaN or infinite outputs")


def to_batch(data: Any, spec: InputSpec, field: str, may_hold_bools: bool = True) -> np.ndarray:
    """Validate nested lists against the input spec and convert them to a batch array.

    ``may_hold_bools`` False (the body has no ``true``/``false`` token) skips the boolean scan."""
    if spec.dtype == "string":  # text: one string per sample, tokenized by the model (serving.text)
        from serving.text import text_batch

        return text_batch(data, field)
    try:
        array: np.ndarray | None = np.asarray(data)
    except (ValueError, TypeError, OverflowError):  # ragged nesting, odd objects
        array = None
    if array is not None and _numeric_batch_of(array, spec.shape):
        # numpy reads JSON booleans among numbers as 0/1: a scan at C speed finds them.
        problem = may_hold_bools and boolean_problem(data, array, field, f' for input "{spec.name}"')
        if problem:
            raise ClientError(400, problem)
        return cast(array, spec, field)
    problem = _find_problem(data, spec, field)  # names the bad value (error path only)
    raise ClientError(
        400, problem or f'{field}: input "{spec.name}" must be a numeric array of shape {[-1, *spec.shape]}'
    )


def _numeric_batch_of(array: np.ndarray, sample_shape: tuple[int, ...]) -> bool:
    return (
        array.dtype.kind in "iuf"
        and array.ndim == len(sample_shape) + 1
        and array.shape[0] > 0
        and array.shape[1:] == sample_shape
    )


_NUMBER_TYPES = frozenset((int, float))


def _boolean_at(data: Any, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The index of the first boolean in nested lists of ``shape`` (numpy made them numbers), or None.

    The lists are flattened level by level and the leaves' types collected by C loops: a few
    nanoseconds an element, against microseconds for a Python walk, so a refused body costs about
    what a valid one does (issue 19, finding 5).
    """
    leaves: Any = data
    for _ in range(len(shape) - 1):
        leaves = list(chain.from_iterable(leaves))
    if bool not in set(map(type, leaves)):
        return None
    flat = list(map(type, leaves)).index(bool)
    return tuple(int(i) for i in np.unravel_index(flat, shape))


def _leaf_problem(values: list[Any], path: str, name: str, dtype: str = "") -> str | None:
    """The first value of a list of leaves that is not a number within 64 bits, described, or None."""
    types = set(map(type, values))
    if types <= _NUMBER_TYPES and (int not in types or -(2**63) <= min(values) and max(values) < 2**64):
        return None
    for i, value in enumerate(values):
        problem = _value_problem(value, name, dtype)
        if problem:
            return f"{path}[{i}]: {problem}"
    return None


def _value_problem(value: Any, name: str, dtype: str = "") -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number{name}, got {show(value)}"
    if isinstance(value, int) and not -(2**63) <= value < 2**64:
        return f"integer {show(value)} is out of range" + (f" for {dtype}" if dtype else "")
    return None


def _find_problem(data: Any, spec: InputSpec, field: str) -> str | None:
    """Walk the nested lists and describe the first value that does not fit the spec.

    Lists of leaves are checked whole (``_leaf_problem``), so the walk's Python steps are one per
    innermost list, not one per value.
    """
    dims: tuple[int | None, ...] = (None, *spec.shape)  # None: any non-zero batch size
    stack: list[tuple[Any, str, int]] = [(data, field, 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth == len(dims):
            problem = _value_problem(value, f' for input "{spec.name}"', spec.dtype)
            if problem:
                return f"{path}: {problem}"
            continue
        want = dims[depth]
        if not isinstance(value, list):
            return f'{path}: expected an array (input "{spec.name}" takes shape {[-1, *spec.shape]}), got {show(value)}'
        if want is None and not value:
            return f"{path}: expected a non-empty batch of samples, got an empty array"
        if want is not None and len(value) != want:
            return (
                f'{path}: expected {want} values (input "{spec.name}" takes samples of shape '
                f"{list(spec.shape)}), got {len(value)}"
            )
        if depth == len(dims) - 1 and list not in set(map(type, value)):
            problem = _leaf_problem(value, path, f' for input "{spec.name}"', spec.dtype)
            if problem:
                return problem
            continue
        stack.extend((value[i], f"{path}[{i}]", depth + 1) for i in range(len(value) - 1, -1, -1))
    return None


def first_non_number(data: Any, field: str) -> str | None:
    """Describe the first leaf that is not a number, walking iteratively (no recursion); lists that
    hold no list are checked whole."""
    stack: list[tuple[Any, str]] = [(data, field)]
    while stack:
        value, path = stack.pop()
        if isinstance(value, list):
            if list not in set(map(type, value)):
                problem = _leaf_problem(value, path, "")
                if problem:
                    return problem
                continue
            stack.extend((value[i], f"{path}[{i}]") for i in range(len(value) - 1, -1, -1))
        else:
            problem = _value_problem(value, "")
            if problem:
                return f"{path}: {problem}"
    return None


def boolean_problem(data: Any, array: np.ndarray, field: str, name: str = "") -> str | None:
    """A boolean among numbers that numpy read as 0/1 (``array`` is ``np.asarray(data)``), described.

    A scan at C speed (``_boolean_at``), bounded whatever the body; the transports skip it for a
    body without a ``true``/``false`` token, where no boolean can be."""
    where = _boolean_at(data, array.shape) if array.ndim else None
    if where is None:
        return None
    value = data
    for i in where:
        value = value[i]
    return f"{field}{''.join(f'[{i}]' for i in where)}: expected a number{name}, got {show(value)}"


def check_integers(array: np.ndarray, dtype: np.dtype[Any], field: str, name: str) -> None:
    """Values sent as an integer type must be integral and within that type's range."""
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.trunc(array)).all()):
        raise ClientError(400, f"{field}: {name} takes integers")
    info = np.iinfo(dtype)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ClientError(400, f"{field}: {name} takes values in {info.min}..{info.max}")


_FLOAT_LIMITS = {np.dtype(t): float(np.finfo(t).max) for t in (np.float16, np.float32, np.float64)}
# float64 values whose sum of squares is at most this are all finite and within half the target's
# range (NaN and overflowing squares fail the comparison): one reduction for the usual body.
_SAFE_SQUARES = {np.dtype(t): (float(np.finfo(t).max) / 2) ** 2 for t in (np.float16, np.float32)}
_FLOAT64 = np.dtype(np.float64)
_DTYPES: dict[str, np.dtype[Any]] = {}


def cast(array: np.ndarray, spec: InputSpec, field: str) -> np.ndarray:
    """Cast to the input's dtype, rejecting values that do not survive the cast."""
    target = _DTYPES.get(spec.dtype)
    if target is None:
        target = _DTYPES[spec.dtype] = np.dtype(spec.dtype)
    if target.kind == "f":
        squares = _SAFE_SQUARES.get(target)
        if squares is not None and array.dtype == _FLOAT64 and np.vdot(array, array) <= squares:
            return array.astype(target)
        # NaN fails both comparisons and infinities the range: two reductions check it all, on
        # the values as sent, so the cast below cannot overflow.
        limit = _FLOAT_LIMITS[target]
        if array.dtype.itemsize == 2:  # float16 sent: under NumPy 2's promotion a Python float limit
            finite = bool(np.isfinite(array).all())  # compared with it becomes a float16 (inf)
        else:
            finite = bool(-limit <= array.min() and array.max() <= limit)
        if not finite:
            raise ClientError(
                400,
                f'{field}: input "{spec.name}" has non-finite values (NaN, Infinity or outside '
                f"the {spec.dtype} range); send finite numbers",
            )
        return array if array.dtype == target else array.astype(target)
    if array.dtype.kind == "f" and not (np.isfinite(array).all() and (array == np.trunc(array)).all()):
        raise ClientError(400, f'{field}: input "{spec.name}" takes integers ({spec.dtype})')
    if spec.range is not None:
        low, high = spec.range
    else:
        info = np.iinfo(target)
        low, high = int(info.min), int(info.max)
    if array.min() < low or array.max() > high:
        raise ClientError(400, _outside(array, spec, field, low, high))
    return array.astype(target)


def _outside(array: np.ndarray, spec: InputSpec, field: str, low: int, high: int) -> str:
    """Which sample holds the first value outside ``low..high``, and what it is (error path only)."""
    flat = array.reshape(len(array), -1) if array.ndim else array.reshape(1, 1)
    sample, position = (int(i[0]) for i in np.nonzero((flat < low) | (flat > high)))
    value = flat[sample, position]
    what = "ids" if spec.range is not None else f"{spec.dtype} values"
    return f'{field}: input "{spec.name}" takes {what} in {low}..{high}; sample {sample} has {value.item()}'


def check_input_tensor(name: Any, shape: Any, datatype: Any, spec: InputSpec, where: str) -> None:
    """The tensor's name, shape (batch first) and datatype must fit the model's input (HTTP and gRPC)."""
    if name != spec.name:
        raise ClientError(400, f'{where}.name: this model\'s input is "{spec.name}", got {show(name)}')
    expected = [-1, *spec.shape]
    if not (
        isinstance(shape, list)
        and len(shape) == len(expected)
        and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        and 1 <= shape[0] <= MAX_BATCH_DIM
        and list(shape[1:]) == list(spec.shape)
    ):
        raise ClientError(
            400,
            f'{where}.shape: input "{spec.name}" takes shape {expected} (batch first, at least 1), got {show(shape)}',
        )
    if datatype not in V2_NUMPY:
        raise ClientError(
            400,
            f'{where}.datatype: input "{spec.name}" takes {V2_DATATYPES[spec.dtype]} (or another '
            f"numeric type: {', '.join(V2_NUMPY)}), got {show(datatype)}",
        )


def tensor_array(data: Any, shape: list[int], field: str, name: str, may_hold_bools: bool = True) -> np.ndarray:
    """The tensor data as an array of ``shape``: flat row-major or nested in that shape (``may_hold_bools``
    as for ``to_batch``)."""
    if not isinstance(data, list):
        raise ClientError(400, f'{field}: must be an array of numbers for input "{name}", got {kind(data)}')
    count = math.prod(shape)
    try:
        array: np.ndarray | None = np.asarray(data)
    except (ValueError, TypeError, OverflowError):  # ragged nesting, odd objects
        array = None
    if array is not None and array.dtype.kind in "iuf":
        # numpy reads JSON booleans among numbers as 0/1: a scan at C speed finds them.
        problem = may_hold_bools and boolean_problem(data, array, field)
        if problem:
            raise ClientError(400, f'{problem} (input "{name}")')
    else:
        problem = first_non_number(data, field)
        if problem:
            raise ClientError(400, f'{problem} (input "{name}")')
        if array is None or array.dtype.kind not in "iuf":
            raise ClientError(400, f'{field}: input "{name}" must be numbers, flat or nested in shape {shape}')
    if array.ndim != 1 and list(array.shape) != list(shape):
        raise ClientError(
            400,
            f"{field}: nested data has shape {list(array.shape)}, but shape says {shape}; "
            "send it flat (row-major) or nested in that shape",
        )
    if array.size != count:
        raise ClientError(400, f"{field}: shape {shape} needs {count} values, got {array.size}")
    return array.reshape(shape)

"""The Open Inference Protocol's binary tensor data extension (HTTP) and raw tensor bytes (gRPC).

Written by hand: the extension is a framing convention, not a format any library parses. A
request with the ``Inference-Header-Content-Length: N`` header carries N bytes of JSON and then
the bytes of every input whose ``parameters.binary_data_size`` is set, back to back in input
order; an answer uses the same framing for outputs asked for as binary. A tensor's bytes are
its elements row-major, little-endian (BOOL: one byte each; BYTES: see ``serving.bytes_tensors``),
which is also what gRPC's ``raw_input_contents`` / ``raw_output_contents`` hold.

Everything here is pure: problems raise ``TensorDataError`` with a message that names the tensor
and the fix, which the HTTP and gRPC front ends answer as 400 / INVALID_ARGUMENT.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from serving.bytes_tensors import TensorDataError, decode_bytes, encode_bytes

HEADER_LENGTH = "inference-header-content-length"
OCTET_STREAM = b"application/octet-stream"

# Protocol datatype -> little-endian numpy dtype of its raw bytes (BYTES is length-prefixed).
RAW_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*RAW_DTYPES, "BYTES")

__all__ = [
    "DATATYPES",
    "HEADER_LENGTH",
    "OCTET_STREAM",
    "RAW_DTYPES",
    "BinaryTail",
    "TensorDataError",
    "binary_outputs_wanted",
    "encode_binary_body",
    "header_length",
    "tensor_from_bytes",
    "tensor_to_bytes",
]


def header_length(value: str, body_size: int) -> int:
    """The JSON header's length from the ``Inference-Header-Content-Length`` value, checked."""
    text = value.strip()
    if not text.isascii() or not text.isdigit():
        raise TensorDataError(
            f"Inference-Header-Content-Length: must be the JSON header's size in bytes (a decimal "
            f"integer), got {value[:40]!r}"
        )
    if len(text) > 19:  # beyond any body this server reads; int() of thousands of digits is refused too
        raise TensorDataError(
            f"Inference-Header-Content-Length: {text[:20]}... ({len(text)} digits) is larger than the body "
            f"({body_size} bytes); it must count only the JSON header at the start of the body"
        )
    length = int(text)
    if length == 0:
        raise TensorDataError(
            "Inference-Header-Content-Length: 0 leaves no JSON header; it must count the bytes of "
            "the JSON document that starts the body"
        )
    if length > body_size:
        raise TensorDataError(
            f"Inference-Header-Content-Length: {length} is larger than the body ({body_size} "
            "bytes); it must count only the JSON header at the start of the body"
        )
    return length


class BinaryTail:
    """The bytes after the JSON header, handed to the inputs that declare binary_data_size, in order."""

    __slots__ = ("_view", "_offset")

    def __init__(self, tail: bytes | memoryview) -> None:
        self._view = memoryview(tail).cast("B")
        self._offset = 0

    def take(self, size: Any, where: str) -> memoryview:
        """The next ``size`` bytes for the tensor at ``where``."""
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise TensorDataError(
                f"{where}.parameters.binary_data_size: must be the tensor's size in bytes (an "
                f"integer >= 0), got {size!r}"
            )
        left = len(self._view) - self._offset
        if size > left:
            raise TensorDataError(
                f"{where}.parameters.binary_data_size: {size} bytes, but only {left} binary "
                "byte(s) follow the JSON header for this tensor; the sizes must add up to the body "
                "length minus Inference-Header-Content-Length"
            )
        start = self._offset
        self._offset += size
        return self._view[start : self._offset]

    def finish(self) -> None:
        """Every byte must belong to an input."""
        left = len(self._view) - self._offset
        if left:
            raise TensorDataError(
                f"{left} byte(s) after the JSON header belong to no input; the inputs' "
                "binary_data_size values must add up to the body length minus "
                "Inference-Header-Content-Length"
            )


def tensor_from_bytes(raw: bytes | memoryview, datatype: str, shape: list[int], where: str) -> np.ndarray:
    """A tensor of ``shape`` from its raw bytes (native byte order, read-only for numeric types)."""
    count = math.prod(shape)
    if datatype == "BYTES":
        return decode_bytes(raw, count, where).reshape(shape)
    dtype = RAW_DTYPES.get(datatype)
    if dtype is None:
        raise TensorDataError(f"{where}.datatype: {datatype!r} has no binary form; use one of {', '.join(DATATYPES)}")
    size = len(memoryview(raw).cast("B"))
    expected = count * dtype.itemsize
    if size != expected:
        raise TensorDataError(
            f"{where}: {size} bytes of binary data, but shape {list(shape)} of {datatype} needs "
            f"{expected} ({count} element(s) of {dtype.itemsize} byte(s)); fix the shape, the "
            "datatype or binary_data_size"
        )
    array = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and array.size and np.frombuffer(raw, dtype=np.uint8).max() > 1:
        raise TensorDataError(f"{where}: BOOL elements must be bytes 0 or 1")
    if not dtype.isnative:
        array = array.astype(dtype.newbyteorder("="))
    return array.reshape(shape)


def tensor_to_bytes(array: np.ndarray) -> bytes:
    """The raw bytes of a tensor: row-major little-endian, BYTES length-prefixed."""
    if array.dtype == object or array.dtype.kind in "SU":
        return encode_bytes(array)
    little = array.dtype.newbyteorder("<") if array.dtype.byteorder not in ("|", "<") else array.dtype
    return np.ascontiguousarray(array, dtype=little).tobytes()


def binary_outputs_wanted(request_parameters: Any, output_parameters: Any) -> bool:
    """Whether one output goes back as binary.

    The output's own ``binary_data`` (``binary_data_output`` is accepted too) decides; without
    it, the request's ``binary_data_output``; without either, JSON.
    """
    if isinstance(output_parameters, dict):
        for key in ("binary_data", "binary_data_output"):
            if key in output_parameters:
                return output_parameters[key] is True
    if isinstance(request_parameters, dict):
        return request_parameters.get("binary_data_output") is True
    return False


def encode_binary_body(document: bytes, tensors: list[bytes]) -> tuple[bytes, int]:
    """The body of an answer with binary outputs, and the JSON header's length for its header."""
    return b"".join((document, *tensors)), len(document)

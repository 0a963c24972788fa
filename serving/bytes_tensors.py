"""BYTES tensors of the Open Inference Protocol: JSON strings and length-prefixed bytes <-> numpy.

A BYTES tensor is an array of byte strings. In JSON each element is a string; in binary form
(the HTTP binary data extension and gRPC raw contents) the elements follow each other, each as
a 4-byte little-endian unsigned length and then that many bytes. Decoded tensors are numpy
object arrays of ``bytes``. Written by hand because the layout is a few lines of ``struct`` and
no small library implements it; the checks name the element where the bytes stop making sense.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

_LENGTH = struct.Struct("<I")


class TensorDataError(ValueError):
    """A tensor's bytes or values do not fit its datatype and shape (the caller answers 400)."""


def decode_bytes(raw: bytes | memoryview, count: int, where: str) -> np.ndarray:
    """``count`` length-prefixed elements from ``raw`` as a flat object array of ``bytes``.

    Every byte must belong to an element: a cut-off length, an element running past the end,
    too few elements or bytes left over are errors naming ``where`` and the element.
    """
    view = memoryview(raw).cast("B")
    size = len(view)
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > size:
            have = f"{size - offset} byte(s) left" if offset < size else "no bytes left"
            raise TensorDataError(
                f"{where}: BYTES element {i} of {count}: its 4-byte length is cut off ({have}); "
                "each element is a 4-byte little-endian length followed by that many bytes"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > size:
            raise TensorDataError(
                f"{where}: BYTES element {i} of {count} says {length} bytes, but only "
                f"{size - offset} remain; check the element lengths and the tensor's byte size"
            )
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != size:
        raise TensorDataError(
            f"{where}: {size - offset} byte(s) left after the {count} BYTES element(s) the shape "
            "asks for; the shape and the data disagree"
        )
    return out


def split_bytes(raw: bytes | memoryview, where: str) -> list[bytes]:
    """Every length-prefixed element in ``raw``, however many there are (the caller checks the count)."""
    view = memoryview(raw).cast("B")
    elements: list[bytes] = []
    offset = 0
    while offset < len(view):
        if offset + 4 > len(view):
            raise TensorDataError(
                f"{where}: BYTES element {len(elements)}: its 4-byte length is cut off "
                f"({len(view) - offset} byte(s) left); each element is a 4-byte little-endian length "
                "followed by that many bytes"
            )
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise TensorDataError(
                f"{where}: BYTES element {len(elements)} says {length} bytes, but only "
                f"{len(view) - offset} remain; check the element lengths"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    return elements


def encode_bytes(elements: np.ndarray | list[Any]) -> bytes:
    """The binary form of a BYTES tensor (row-major); ``str`` elements are encoded as UTF-8."""
    flat = elements.ravel().tolist() if isinstance(elements, np.ndarray) else list(elements)
    parts: list[bytes] = []
    for element in flat:
        data = element.encode("utf-8") if isinstance(element, str) else bytes(element)
        parts.append(_LENGTH.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def bytes_from_json(data: Any, count: int, where: str) -> np.ndarray:
    """A JSON BYTES tensor (strings, flat or nested) as a flat object array of UTF-8 ``bytes``."""
    if not isinstance(data, list):
        raise TensorDataError(f"{where}: a BYTES tensor's data must be an array of strings")
    flat: list[Any] = []
    stack: list[Any] = [data]
    while stack:  # iterative flatten, row-major: no recursion limit for deep nesting
        value = stack.pop()
        if isinstance(value, list):
            stack.extend(reversed(value))
        else:
            flat.append(value)
    for i, value in enumerate(flat):
        if not isinstance(value, str):
            raise TensorDataError(f"{where}: BYTES element {i} must be a string, got {type(value).__name__}")
    if len(flat) != count:
        raise TensorDataError(f"{where}: the shape needs {count} BYTES element(s), got {len(flat)}")
    out = np.empty(count, dtype=object)
    out[:] = [value.encode("utf-8") for value in flat]
    return out


def bytes_to_json(elements: np.ndarray) -> list[str]:
    """A BYTES tensor as JSON strings, row-major (bytes that are not UTF-8 are replaced)."""
    return [
        element.decode("utf-8", "replace") if isinstance(element, bytes) else str(element)
        for element in elements.ravel().tolist()
    ]

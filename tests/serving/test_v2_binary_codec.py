"""The binary tensor data codec and the BYTES codec, both ways: framing, sizes, truncation, round trips."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.bytes_tensors import TensorDataError, bytes_from_json, bytes_to_json, decode_bytes, encode_bytes
from serving.v2_binary import (
    RAW_DTYPES,
    BinaryTail,
    binary_outputs_wanted,
    encode_binary_body,
    header_length,
    tensor_from_bytes,
    tensor_to_bytes,
)

# --- BYTES -------------------------------------------------------------------------------------


def test_bytes_round_trip_keeps_every_element() -> None:
    elements = np.array([b"", b"a", "h\xe9llo".encode(), bytes(range(256))], dtype=object)
    raw = encode_bytes(elements)
    assert raw[:4] == b"\x00\x00\x00\x00" and raw[4:8] == struct.pack("<I", 1)
    decoded = decode_bytes(raw, 4, "inputs[0]")
    assert decoded.dtype == object and decoded.tolist() == elements.tolist()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12))
def test_bytes_round_trip_property(elements: list[bytes]) -> None:
    array = np.empty(len(elements), dtype=object)
    array[:] = elements
    assert decode_bytes(encode_bytes(array), len(elements), "t").tolist() == elements


def test_bytes_encode_takes_strings_as_utf8() -> None:
    assert encode_bytes(["é"]) == struct.pack("<I", 2) + "é".encode()


@pytest.mark.parametrize(
    ("raw", "count", "message"),
    [
        (b"\x01\x00", 1, "element 0 of 1: its 4-byte length is cut off (2 byte(s) left)"),
        (struct.pack("<I", 1) + b"a", 2, "element 1 of 2: its 4-byte length is cut off (no bytes left)"),
        (struct.pack("<I", 10) + b"abc", 1, "element 0 of 1 says 10 bytes, but only 3 remain"),
        (struct.pack("<I", 0xFFFFFFFF), 1, "says 4294967295 bytes, but only 0 remain"),
        (struct.pack("<I", 1) + b"ab", 1, "1 byte(s) left after the 1 BYTES element(s)"),
        (b"x", 0, "1 byte(s) left after the 0 BYTES element(s)"),
    ],
)
def test_bytes_decode_rejects_bad_framing(raw: bytes, count: int, message: str) -> None:
    with pytest.raises(TensorDataError) as info:
        decode_bytes(raw, count, "inputs[0]")
    assert str(info.value).startswith("inputs[0]: ") and message in str(info.value), str(info.value)


def test_bytes_from_json_flat_or_nested_and_back() -> None:
    decoded = bytes_from_json([["a", "bé"], ["", "z"]], 4, "inputs[0].data")
    assert decoded.tolist() == [b"a", "bé".encode(), b"", b"z"]
    assert bytes_to_json(decoded) == ["a", "bé", "", "z"]


@pytest.mark.parametrize(
    ("data", "count", "message"),
    [
        ("abc", 1, "must be an array of strings"),
        (["a", 1], 2, "BYTES element 1 must be a string, got int"),
        (["a"], 2, "the shape needs 2 BYTES element(s), got 1"),
    ],
)
def test_bytes_from_json_rejects(data: object, count: int, message: str) -> None:
    with pytest.raises(TensorDataError) as info:
        bytes_from_json(data, count, "inputs[0].data")
    assert message in str(info.value)


# --- numeric tensors ---------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", sorted(RAW_DTYPES))
def test_numeric_round_trip_every_datatype(datatype: str) -> None:
    dtype = RAW_DTYPES[datatype]
    values = (np.arange(6) % 2).astype(dtype) if datatype == "BOOL" else np.arange(6).astype(dtype)
    raw = tensor_to_bytes(values.reshape(2, 3))
    assert len(raw) == 6 * dtype.itemsize
    back = tensor_from_bytes(raw, datatype, [2, 3], "inputs[0]")
    assert back.shape == (2, 3) and back.dtype == dtype.newbyteorder("=")
    np.testing.assert_array_equal(back.ravel(), values)


def test_raw_bytes_are_little_endian_whatever_the_array_order() -> None:
    big = np.array([1.5, -2.0], dtype=">f4")
    assert tensor_to_bytes(big) == struct.pack("<2f", 1.5, -2.0)
    assert tensor_from_bytes(struct.pack("<2f", 1.5, -2.0), "FP32", [1, 2], "t").tolist() == [[1.5, -2.0]]


def test_bytes_tensor_through_the_numeric_entry_point() -> None:
    raw = encode_bytes([b"x", b"yz"])
    back = tensor_from_bytes(raw, "BYTES", [2, 1], "inputs[0]")
    assert back.shape == (2, 1) and back.ravel().tolist() == [b"x", b"yz"]
    assert tensor_to_bytes(back) == raw


@pytest.mark.parametrize(
    ("raw", "datatype", "shape", "message"),
    [
        (
            b"\x00" * 12,
            "FP32",
            [1, 4],
            "12 bytes of binary data, but shape [1, 4] of FP32 needs 16 (4 element(s) of 4 byte(s))",
        ),
        (b"\x00" * 20, "FP32", [1, 4], "20 bytes of binary data"),
        (b"\x00" * 4, "FP16", [1, 4], "needs 8"),
        (b"\x02", "BOOL", [1], "BOOL elements must be bytes 0 or 1"),
        (b"", "STRING", [1], "'STRING' has no binary form"),
    ],
)
def test_numeric_decode_rejects_wrong_byte_counts(raw: bytes, datatype: str, shape: list[int], message: str) -> None:
    with pytest.raises(TensorDataError) as info:
        tensor_from_bytes(raw, datatype, shape, "inputs[0]")
    assert message in str(info.value), str(info.value)


# --- framing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "size", "message"),
    [
        ("abc", 10, "must be the JSON header's size in bytes"),
        ("-1", 10, "must be the JSON header's size in bytes"),
        ("\u0661", 10, "must be the JSON header's size in bytes"),  # Arabic-Indic digit one
        ("0", 10, "0 leaves no JSON header"),
        ("11", 10, "11 is larger than the body (10 bytes)"),
    ],
)
def test_header_length_rejects(value: str, size: int, message: str) -> None:
    with pytest.raises(TensorDataError) as info:
        header_length(value, size)
    assert message in str(info.value)


def test_header_length_accepts_the_whole_body_or_less() -> None:
    assert header_length("10", 10) == 10 and header_length(" 3 ", 10) == 3


def test_binary_tail_hands_out_sizes_in_order_and_checks_the_sum() -> None:
    tail = BinaryTail(b"aabbb")
    assert bytes(tail.take(2, "inputs[0]")) == b"aa"
    assert bytes(tail.take(3, "inputs[1]")) == b"bbb"
    tail.finish()

    short = BinaryTail(b"ab")
    with pytest.raises(TensorDataError, match=r"inputs\[0\]\.parameters\.binary_data_size: 3 bytes, but only 2"):
        short.take(3, "inputs[0]")
    left = BinaryTail(b"abc")
    left.take(1, "inputs[0]")
    with pytest.raises(TensorDataError, match="2 byte.s. after the JSON header belong to no input"):
        left.finish()
    for bad in (-1, 1.5, True, "4", None):
        with pytest.raises(TensorDataError, match="must be the tensor's size in bytes"):
            BinaryTail(b"abcd").take(bad, "inputs[0]")


def test_binary_outputs_wanted_output_parameter_wins_over_the_request() -> None:
    assert binary_outputs_wanted({"binary_data_output": True}, None)
    assert not binary_outputs_wanted({"binary_data_output": True}, {"binary_data": False})
    assert binary_outputs_wanted(None, {"binary_data": True})
    assert binary_outputs_wanted({}, {"binary_data_output": True})
    assert not binary_outputs_wanted(None, None) and not binary_outputs_wanted({"binary_data_output": 1}, {})


def test_encode_binary_body_puts_tensors_after_the_header() -> None:
    body, length = encode_binary_body(b'{"a":1}', [b"\x01\x02", b"\x03"])
    assert body == b'{"a":1}\x01\x02\x03' and length == 7


def test_split_bytes_takes_every_element_and_names_a_cut() -> None:
    from serving.bytes_tensors import split_bytes

    assert split_bytes(encode_bytes([b"a", b"", b"xyz"]), "t") == [b"a", b"", b"xyz"]
    assert split_bytes(b"", "t") == []
    with pytest.raises(TensorDataError, match="element 1: its 4-byte length is cut off"):
        split_bytes(encode_bytes([b"a"]) + b"\x01", "t")
    with pytest.raises(TensorDataError, match="element 0 says 5 bytes, but only 2 remain"):
        split_bytes(struct.pack("<I", 5) + b"ab", "t")

"""The codec in process: every datatype through each decode/encode pair (raw buffers, flat
lists, nested JSON lists) and back to the same array, and each decoding mistake named with
the tensor and its role. No server: these are the functions both frontends and the client
call."""

from __future__ import annotations

import json

import numpy as np
import pytest

from service import codecs
from service.datatypes import NUMPY_BY_DATATYPE
from service.errors import ErrorKind, ServingError

SAMPLES = {
    "BOOL": np.array([[True, False, True], [False, False, True]]),
    "UINT8": np.array([[0, 7, 255], [1, 2, 3]], dtype=np.uint8),
    "UINT16": np.array([[0, 7, 65535], [1, 2, 3]], dtype=np.uint16),
    "UINT32": np.array([[0, 7, 2**32 - 1], [1, 2, 3]], dtype=np.uint32),
    "UINT64": np.array([[0, 7, 2**64 - 1], [1, 2, 3]], dtype=np.uint64),
    "INT8": np.array([[-128, 0, 127], [1, -2, 3]], dtype=np.int8),
    "INT16": np.array([[-32768, 0, 32767], [1, -2, 3]], dtype=np.int16),
    "INT32": np.array([[-(2**31), 0, 2**31 - 1], [1, -2, 3]], dtype=np.int32),
    "INT64": np.array([[-(2**63), 0, 2**63 - 1], [1, -2, 3]], dtype=np.int64),
    "FP16": np.array([[0.5, -1.25, 65504.0], [1e-3, 2.0, -3.0]], dtype=np.float16),
    "FP32": np.array([[0.5, -1.25, 3.4e38], [1e-30, 2.0, -3.0]], dtype=np.float32),
    "FP64": np.array([[0.5, -1.25, 1e300], [1e-300, 2.0, -3.0]], dtype=np.float64),
    "BYTES": np.array([[b"Adelie", b"", b"\xff\x00binary"], [b"a", b"bc", b"def"]], dtype=object),
}


def test_every_protocol_datatype_has_a_sample():
    assert set(SAMPLES) == set(NUMPY_BY_DATATYPE)


def assert_same(decoded: np.ndarray, original: np.ndarray, datatype: str) -> None:
    assert decoded.shape == original.shape
    assert decoded.dtype == NUMPY_BY_DATATYPE[datatype]
    assert decoded.tolist() == original.tolist()


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_raw_round_trip(datatype):
    array = SAMPLES[datatype]
    raw = codecs.encode_raw(array)
    assert_same(codecs.decode_raw("x", datatype, array.shape, raw), array, datatype)


@pytest.mark.parametrize("datatype", list(SAMPLES))
def test_flat_list_round_trip(datatype):
    array = SAMPLES[datatype]
    values = codecs.encode_list(array)
    assert len(values) == array.size  # flat, row-major
    assert_same(codecs.decode_list("x", datatype, array.shape, values), array, datatype)


@pytest.mark.parametrize("datatype", [d for d in SAMPLES if d != "BYTES"])
def test_json_round_trip_nested_and_flat(datatype):
    array = SAMPLES[datatype]
    nested = json.loads(json.dumps(codecs.encode_json(array, nested=True)))
    flat = json.loads(json.dumps(codecs.encode_json(array, nested=False)))
    assert_same(codecs.decode_nested("x", datatype, nested), array, datatype)
    assert_same(codecs.decode_list("x", datatype, array.shape, flat), array, datatype)


def test_json_carries_bytes_as_text():
    array = np.array([[b"Adelie", b"Gentoo"]], dtype=object)
    nested = json.loads(json.dumps(codecs.encode_json(array)))
    assert nested == [["Adelie", "Gentoo"]]
    assert_same(codecs.decode_nested("x", "BYTES", nested), array, "BYTES")


def test_equal_length_texts_stay_separate_bytes_elements():
    decoded = codecs.decode_nested("x", "BYTES", [["ab", "cd"], ["ef", "gh"]])
    assert decoded.shape == (2, 2) and decoded[1, 0] == b"ef"


def test_raw_is_little_endian():
    assert codecs.encode_raw(np.array([1], dtype=">i4")) == b"\x01\x00\x00\x00"
    assert codecs.encode_raw(np.array([b"ab"], dtype=object)) == b"\x02\x00\x00\x00ab"


def test_zero_elements():
    empty = codecs.decode_raw("x", "FP32", [0, 4], b"")
    assert empty.shape == (0, 4)
    assert codecs.decode_list("x", "BYTES", [0], []).shape == (0,)


def mistake(call) -> str:
    with pytest.raises(ServingError) as caught:
        call()
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    return caught.value.message


@pytest.mark.parametrize(
    "call, fragments",
    [
        (lambda: codecs.decode_raw("f", "FP32", [2, 4], b"\0" * 16),
         ["input 'f'", "16 bytes", "32 bytes"]),
        (lambda: codecs.decode_raw("f", "FLOAT", [1], b"\0" * 4),
         ["input 'f'", "unknown datatype 'FLOAT'", "FP32"]),
        (lambda: codecs.decode_raw("f", "FP32", [-1, 4], b"\0" * 16),
         ["input 'f'", "negative"]),
        (lambda: codecs.decode_raw("s", "BYTES", [2], b"\x05\x00\x00\x00ab"),
         ["input 's'", "2 length-prefixed"]),
        (lambda: codecs.decode_raw("s", "BYTES", [1], b"\x01\x00\x00\x00ab"),
         ["input 's'", "1 length-prefixed"]),
        (lambda: codecs.decode_list("f", "FP32", [2, 4], [1.0, 2.0, 3.0]),
         ["input 'f'", "3 elements given", "needs 8"]),
        (lambda: codecs.decode_list("i", "UINT8", [1], [300]),
         ["input 'i'", "element 0 (300) is out of the range of UINT8"]),
        (lambda: codecs.decode_nested("f", "FP32", [[1, 2], [3]]),
         ["input 'f'", "ragged"]),
        (lambda: codecs.decode_nested("f", "FP32", [["a", "b"]]),
         ["input 'f'", "element 0 is the text 'a'", "FP32 elements are numbers"]),
        (lambda: codecs.decode_nested("s", "BYTES", [[1, 2]]),
         ["input 's'", "element 0 is the number 1", "BYTES elements are text"]),
        (lambda: codecs.decode_raw("p", "FP32", [1, 3], b"\0" * 4, role=codecs.OUTPUT),
         ["output 'p'", "4 bytes", "12 bytes"]),
    ],
)
def test_decoding_mistakes_name_the_tensor(call, fragments):
    message = mistake(call)
    for fragment in fragments:
        assert fragment in message, (fragment, message)

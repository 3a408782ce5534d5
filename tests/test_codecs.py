"""The codec in process: every datatype through each decode/encode pair (raw buffers, flat
lists, nested JSON lists) and back to the same array, and each decoding mistake named with
the tensor and its role. No server: these are the functions both frontends and the client
call."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.helpers.paths import ROOT
from zooserve.protocol import codecs
from zooserve.protocol.datatypes import NUMPY_BY_DATATYPE
from zooserve.protocol.errors import ErrorKind, ServingError

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


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(items=st.lists(st.binary(max_size=6), max_size=20)
       | st.integers(0, 5).flatmap(lambda n: st.lists(st.binary(min_size=n, max_size=n),
                                                      max_size=20)))
def test_raw_bytes_round_trip_any_lengths(items):
    """Elements of mixed lengths, of one length (cut without reading each prefix) and empty
    ones come back exactly; one byte more or less is refused."""
    raw = codecs.encode_raw(codecs.object_array(items, (len(items),)))
    assert codecs.decode_raw("s", "BYTES", [len(items)], raw).tolist() == items
    for broken in (raw + b"\0", raw[:-1]):
        if broken != raw:
            with pytest.raises(ServingError):
                codecs.decode_raw("s", "BYTES", [len(items)], broken)


@pytest.mark.parametrize("datatype, values, fragment", [
    ("INT8", [127, -128], None), ("INT8", [128], "element 0 (128) is out of the range of INT8"),
    ("UINT8", [-1], "(-1) is out of the range of UINT8"), ("UINT64", [2**64 - 1], None),
    ("UINT64", [2**64], "out of the range of UINT64"), ("INT64", [-(2**63)], None),
    ("FP32", [3.4e38, "NaN", "-Infinity", math.inf], None),
    ("FP32", [1e39], "(1e+39) is out of the range of FP32"),
    ("FP16", [65504.0], None), ("FP16", [70000.0], "out of the range of FP16"),
    ("FP32", [True], "element 0 is a boolean"), ("BOOL", [1], "element 0 is the number 1"),
    ("INT32", [1.0], "element 0 is the number 1.0"), ("FP64", [None], "element 0 is null"),
    ("FP32", ["nan"], "element 0 is the text 'nan'"),
])  # fmt: skip
def test_json_elements_are_checked_per_datatype(datatype, values, fragment):
    if fragment is None:
        decoded = codecs.decode_list("v", datatype, [len(values)], values)
        expected = [codecs.NON_FINITE_TEXT.get(v, v) if isinstance(v, str) else v
                    for v in values]
        np.testing.assert_array_equal(decoded, np.asarray(expected).astype(decoded.dtype))
    else:
        assert fragment in mistake(lambda: codecs.decode_list("v", datatype, [1], values))


@pytest.mark.parametrize("shape, fragment", [
    ([1] * 33, "33 axes, more than the limit of 32"),
    ([2**62, 2**62], "more elements than the limit of 268435456"),
    ([1 << 29], "more elements than the limit"),
    ([-1, 4], "negative"),
])
def test_shapes_are_bounded_before_anything_is_sized(shape, fragment):
    assert fragment in mistake(lambda: codecs.decode_raw("v", "FP32", shape, b""))
    assert fragment in mistake(lambda: codecs.decode_list("v", "FP32", shape, []))


def test_non_finite_floats_are_json_text():
    array = np.array([1.5, np.nan, np.inf, -np.inf], dtype=np.float32)
    assert codecs.encode_json(array) == [1.5, "NaN", "Infinity", "-Infinity"]
    decoded = codecs.decode_list("v", "FP32", [4], codecs.encode_json(array))
    np.testing.assert_array_equal(decoded, array)


def test_messages_quote_a_bounded_prefix_of_a_name():
    message = mistake(lambda: codecs.decode_raw("n\n" + "x" * 100_000, "FP32", [1], b""))
    assert message.startswith("input 'n\\nxxx") and "(100002 characters)" in message
    assert len(message) < 300


TYPED_DECODE = """
import tracemalloc
import numpy as np
from zooserve.protocol import codecs
from zooserve.protocol.errors import ServingError
from zooserve.protocol import grpc_tensors as tensors
from zooserve.protocol.generated import grpc_service_pb2 as pb

N = 1_000_000
def tensor(datatype, field, values):
    request = pb.ModelInferRequest()
    t = request.inputs.add(name="v", datatype=datatype, shape=[len(values)])
    getattr(t.contents, field).extend(values)
    return pb.ModelInferRequest.FromString(request.SerializeToString()).inputs[0]

def decode(t):
    return codecs.decode_list("v", t.datatype, t.shape, tensors.typed_contents(t, "input"))

fp32 = tensor("FP32", "fp32_contents", np.arange(N, dtype=np.float32).tolist())
tracemalloc.start()
array = decode(fp32)
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
assert array.dtype == np.float32 and array.tolist() == list(range(N))
print("fp32 peak", peak / (4 * N))
for datatype, field, values in [("INT8", "int_contents", [-128, 127, 5]),
                                ("UINT16", "uint_contents", [0, 65535]),
                                ("INT64", "int64_contents", [-(2**63), 2**63 - 1]),
                                ("UINT64", "uint64_contents", [2**64 - 1]),
                                ("FP64", "fp64_contents", [1.5, float("inf")]),
                                ("BOOL", "bool_contents", [True, False])]:
    decoded = decode(tensor(datatype, field, values))
    assert decoded.tolist() == values and decoded.dtype == codecs.NUMPY_BY_DATATYPE[datatype]
for datatype, field, values in [("INT8", "int_contents", [1, 128]),
                                ("UINT8", "uint_contents", [256]),
                                ("INT16", "int_contents", [-32769])]:
    try:
        decode(tensor(datatype, field, values))
    except ServingError as error:
        print("refused", error.message)
"""


def test_typed_contents_decode_without_python_objects():
    """A 1M-element FP32 typed-contents tensor decodes with a peak of about its own size
    (a Python list of it cost over 10x); integer lists are range-checked per datatype."""
    result = subprocess.run([sys.executable, "-c", TYPED_DECODE], capture_output=True,
                            text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    peak = float(lines[0].split()[-1])
    assert peak < 2.0, lines[0]
    assert lines[1:] == [
        "refused input 'v': element 1 (128) is out of the range of INT8",
        "refused input 'v': element 0 (256) is out of the range of UINT8",
        "refused input 'v': element 0 (-32769) is out of the range of INT16",
    ]

"""Strict, bounded JSON bodies (zooserve/serving/http_frontend/json_tensors.py): UTF-8 only, no key
twice, the old refusals kept; a large body's arrays of numbers decoded as the list decoder
decodes them, without a Python object per element (a measured memory bound); and a real
server refusing such bodies with 400 and answering the next request."""

from __future__ import annotations

import json
import math
import tracemalloc

import httpx
import numpy as np
import pytest

from tests.helpers.penguin_rows import LABELS, one_of_each
from zooserve.protocol import codecs
from zooserve.protocol.errors import ErrorKind, ServingError
from zooserve.serving.http_frontend import json_arrays, json_tensors

WHAT = "the request body"


@pytest.fixture(params=["stdlib", "bounded"])
def loads(request, monkeypatch):
    """Both paths: stdlib json for small bodies, and the bounded parser (forced for small
    bodies here, every array of 1 byte or more left in the body, tiny chunks)."""
    if request.param == "stdlib":
        return lambda raw: json_tensors.loads(raw, WHAT)
    monkeypatch.setattr(json_tensors, "MIN_BLOCK", 1)
    monkeypatch.setattr(json_tensors, "WINDOWS", ())
    monkeypatch.setattr(json_arrays, "PIECE", 5)
    monkeypatch.setattr(json_arrays, "SCAN_CHUNK", 7)
    return lambda raw: json_tensors.loads(raw, WHAT, small=0)


def refused(load, raw: bytes) -> str:
    """The message a body is refused with, read and its tensors decoded as the route does
    (a large tensor's numbers are checked as they are converted)."""
    with pytest.raises(ServingError) as caught:
        doc = load(raw)
        for tensor in doc.get("inputs", []) if isinstance(doc, dict) else []:
            shape = tensor["shape"]  # an array of numbers too, with MIN_BLOCK forced to 1
            if isinstance(shape, codecs.ElementSource):
                shape = shape.elements("x", "INT64", "input").tolist()
            codecs.decode_list("x", "FP32", shape, tensor["data"])
    assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
    return caught.value.message


def tensor_body(data: bytes, datatype: bytes = b"FP32", shape: bytes = b"[2, 2]") -> bytes:
    return (b'{"inputs": [{"name": "x", "datatype": "' + datatype + b'", "shape": ' + shape
            + b', "data": ' + data + b"}]}")


def decoded(load, raw: bytes, datatype: str = "FP32", shape=(2, 2)) -> np.ndarray:
    (tensor,) = load(raw)["inputs"]
    data = tensor["data"]
    if not isinstance(data, (list, codecs.ElementSource)):
        data = [data]
    return codecs.decode_list("x", datatype, list(shape), data)


# (body, fragment of the message)
NOT_UTF8 = {
    "UTF-16 LE": ('{"inputs": []}'.encode("utf-16-le"), "UTF-16 or UTF-32"),
    "UTF-16 BE with BOM": ('{"inputs": []}'.encode("utf-16"), "UTF-16 or UTF-32"),
    "UTF-16 with BOM only non-ASCII": ("\ufeff\u4e00".encode("utf-16-le"), "UTF-16"),
    "UTF-32": ('{"inputs": []}'.encode("utf-32"), "UTF-16 or UTF-32"),
    "invalid UTF-8": (b'{"inputs": "\xff"}', "byte 12 (0xff) is not UTF-8"),
    "truncated UTF-8": (b'{"id": "caf\xc3"}', "is not UTF-8"),
}


@pytest.mark.parametrize("case", list(NOT_UTF8))
def test_bodies_that_are_not_utf8_are_refused(loads, case):
    raw, fragment = NOT_UTF8[case]
    message = refused(loads, raw)
    assert "not JSON" in message and "must be UTF-8 JSON" in message, message
    assert fragment in message, message


def test_a_utf8_byte_order_mark_is_skipped_as_before(loads):
    assert loads(b'\xef\xbb\xbf{"id": "caf\xc3\xa9"}') == {"id": "café"}


DUPLICATES = {
    "top level": (b'{"inputs": [], "inputs": []}', '"inputs"'),
    "in a tensor": (b'{"inputs": [{"name": "x", "data": [1], "data": [2]}]}', '"data"'),
    "in parameters": (b'{"inputs": [], "parameters": {"a": 1, "b": 2, "a": 3}}', '"a"'),
    "escaped the same": (b'{"inputs": [], "\\u0069nputs": 1}', '"inputs"'),
    "a long key": (b'{"' + b"k" * 100 + b'": 1, "' + b"k" * 100 + b'": 2}', "(100 characters)"),
}


@pytest.mark.parametrize("case", list(DUPLICATES))
def test_a_key_twice_is_refused_naming_it(loads, case):
    raw, key = DUPLICATES[case]
    message = refused(loads, raw)
    assert message.startswith(f"{WHAT} has the key "), message
    assert key in message and message.endswith("twice"), message


# What the old path (stdlib json on the whole body) refused, refused the same way.
OLD_REFUSALS = {
    "not JSON": (b"{nope", "is not JSON: Expecting property name enclosed in double quotes: "
                           "line 1 column 2 (char 1)"),
    "nested 100,000 deep": (b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                            "nested too deeply to read"),
    "1e400": (tensor_body(b"[1e400, 1, 2, 3]"), "the number 1e400 is out of range"),
    "5,000-digit integer": (tensor_body(b"[" + b"9" * 5000 + b", 1, 2, 3]"),
                            "holds a number that cannot be read: Exceeds the limit"),
    "missing comma": (tensor_body(b"[1, 2 3, 4]"),
                      "Expecting ',' delimiter: line 1 column 78 (char 77)"),
    "extra data": (b'{"inputs": []} []', "Extra data: line 1 column 16 (char 15)"),
    "two commas": (tensor_body(b"[[1, 2],, [3, 4]]"), "Expecting value"),
}


@pytest.mark.parametrize("case", list(OLD_REFUSALS))
def test_the_old_refusals_stay(loads, case):
    raw, fragment = OLD_REFUSALS[case]
    message = refused(loads, raw)
    assert fragment in message, message
    assert len(message) < 1000


ACCEPTED = {
    "flat": (b"[1, 2.5, -3, 4e1]", "FP32", (2, 2), [[1, 2.5], [-3, 40]]),
    "nested": (b"[[1, 2], [3, 4]]", "FP32", (2, 2), [[1, 2], [3, 4]]),
    "nested, any nesting of the right count": (b"[[1], [2], [3], [4]]", "INT64", (2, 2),
                                               [[1, 2], [3, 4]]),
    "NaN and infinities as literals": (b"[NaN, Infinity, -Infinity, 0]", "FP64", (2, 2),
                                       [[math.nan, math.inf], [-math.inf, 0]]),
    "NaN and infinities as text": (b'["NaN", "Infinity", "-Infinity", 1]', "FP32", (2, 2),
                                   [[math.nan, math.inf], [-math.inf, 1]]),
    "booleans": (b"[true, false, false, true]", "BOOL", (2, 2), [[True, False], [False, True]]),
    "UINT64 top": (b"[18446744073709551615, 0, 1, 2]", "UINT64", (2, 2),
                   [[2**64 - 1, 0], [1, 2]]),
    "empty": (b"[[], []]", "FP32", (2, 0), np.zeros((2, 0))),
    "-0 as an integer is +0": (b"[-0, -0.0, 0, 1]", "FP64", (2, 2), [[0.0, -0.0], [0, 1]]),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_elements(loads, case):
    data, datatype, shape, expected = ACCEPTED[case]
    array = decoded(loads, tensor_body(data, datatype.encode()), datatype, shape)
    want = np.asarray(expected, dtype=array.dtype)
    assert array.shape == want.shape
    np.testing.assert_array_equal(array, want)
    np.testing.assert_array_equal(np.signbit(array), np.signbit(want))  # -0.0 kept, -0 not


ELEMENT_REFUSALS = {
    "ragged": (b"[[1, 2], [3]]", "FP32", "element 0 is a list (the nesting is ragged"),
    "ragged, scalar first": (b"[1, [2, 3], 4]", "FP32", "element 1 is a list"),
    "wrong count": (b"[1, 2, 3]", "FP32", "3 elements given, but shape [2, 2] needs 4"),
    "boolean for FP32": (b"[1, true, 3, 4]", "FP32", "element 1 is a boolean"),
    "null": (b"[1, 2, null, 4]", "FP32", "element 2 is null"),
    "1e39 for FP32": (b"[1, 1e39, 3, 4]", "FP32", "element 1 (1e+39) is out of the range of FP32"),
    "NaN for INT8": (b"[1, NaN, 3, 4]", "INT8", "element 1 is the number nan"),
    "'NaN' for INT8": (b'[1, "NaN", 3, 4]', "INT8", "element 1 is the text 'NaN'"),
    "128 for INT8": (b"[1, 2, 128, 4]", "INT8", "element 2 (128) is out of the range of INT8"),
    "type before range": (b"[1e39, 2, 3, true]", "FP32", "element 3 is a boolean"),
    "1.5 for INT64": (b"[1, 1.5, 3, 4]", "INT64", "element 1 is the number 1.5"),
    "number for BOOL": (b"[true, 1, true, true]", "BOOL", "element 1 is the number 1"),
    "2**64 for UINT64": (b"[18446744073709551616, 0, 1, 2]", "UINT64",
                         "element 0 (an integer of 65 bits) is out of the range of UINT64"),
    "a huge integer for FP32": (b"[1, 2, " + b"9" * 400 + b", 4]", "FP32",
                                "element 2 (an integer of 1329 bits) is out of the range"),
    "nested 40 deep": (b"[" * 40 + b"1" + b"]" * 40, "FP32", "nested 40 deep"),
}


@pytest.mark.parametrize("case", list(ELEMENT_REFUSALS))
def test_element_mistakes_read_as_before(loads, case):
    data, datatype, fragment = ELEMENT_REFUSALS[case]
    with pytest.raises(ServingError) as caught:
        decoded(loads, tensor_body(data, datatype.encode()), datatype)
    assert fragment in caught.value.message, caught.value.message
    assert caught.value.message.startswith("input 'x'"), caught.value.message


def test_a_syntax_mistake_in_a_large_tensor_is_refused_as_json_would(monkeypatch):
    """inputs[i].data is checked as it is converted: the message is json's, position too."""
    monkeypatch.setattr(json_arrays, "PIECE", 64)
    numbers = b", ".join(b"%d.5" % i for i in range(2000))
    for mistake, reason in [(b"1.2.3", "Expecting ',' delimiter"), (b"01", "Expecting ','"),
                            (b"tru", "Expecting value"), (b"-", "Expecting value")]:
        raw = tensor_body(b"[" + numbers + b", " + mistake + b"]", shape=b"[2001]")
        with pytest.raises(json.JSONDecodeError) as stdlib:
            json.loads(raw)
        assert reason in str(stdlib.value)
        with pytest.raises(ServingError) as caught:
            decoded(lambda r: json_tensors.loads(r, WHAT, small=0), raw, shape=(2001,))
        assert caught.value.message == f"{WHAT} is not JSON: {stdlib.value}"


def test_large_bodies_decode_as_small_ones_do():
    """The same 2 MiB body through both paths gives the same arrays."""
    rows = np.random.default_rng(7).normal(size=(4096, 64)).astype(np.float32)
    body = json.dumps({"id": "é", "inputs": [
        {"name": "x", "datatype": "FP32", "shape": list(rows.shape), "data": rows.tolist()},
        {"name": "y", "datatype": "BYTES", "shape": [3], "data": ["a", "b\\", "ü"]}]})
    raw = body.encode()
    assert len(raw) > json_tensors.SMALL_BODY
    big = json_tensors.loads(raw, WHAT)
    small = json_tensors.loads(raw, WHAT, small=len(raw) + 1)
    assert isinstance(big["inputs"][0]["data"], json_tensors.NumberArray)
    for got, want in zip(big["inputs"], small["inputs"], strict=True):
        a = codecs.decode_list(got["name"], got["datatype"], got["shape"], got["data"])
        b = codecs.decode_list(want["name"], want["datatype"], want["shape"], want["data"])
        np.testing.assert_array_equal(a, b)
    assert big["id"] == small["id"] == "é"


def test_memory_to_decode_16_mib_of_short_numbers_stays_a_small_multiple_of_the_body():
    """A measured bound, not a timing: stdlib json needed ~15x the body for `0,0,0,...`."""
    count = 8 << 20  # "0," each: 16 MiB
    raw = tensor_body(b"[" + b",".join([b"0"] * count) + b"]", shape=b"[%d]" % count)
    refuse = raw[:-3] + b",]}]"  # a mistake in the very last bytes
    for body, accepted in [(raw, True), (refuse, False)]:
        tracemalloc.start()
        try:
            array = decoded(lambda r: json_tensors.loads(r, WHAT), body, shape=(count,))
            assert accepted and array.shape == (count,)
            del array
        except ServingError as exc:
            assert not accepted and "not JSON" in exc.message
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 6 * len(body), (accepted, peak / len(body))


def peak_of(decode) -> tuple[int, object]:
    """tracemalloc's peak while `decode()` runs, and what it returned or raised."""
    tracemalloc.start()
    try:
        outcome = decode()
    except ServingError as exc:
        outcome = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak, outcome


def route(raw: bytes, datatype: str = "FP32") -> object:
    """Read and decode every input, as the route does."""
    doc = json_tensors.loads(raw, WHAT)
    return [codecs.decode_list(t["name"], datatype, t["shape"], t["data"])
            for t in doc["inputs"]]


PAD = b'"parameters": {"pad": "' + b"p" * (1 << 20) + b'"}, '


@pytest.mark.parametrize("field", ["inputs", "outputs"])
def test_more_than_1024_tensors_are_refused_naming_the_field(field):
    tensor = b'{"name": "x", "datatype": "FP32", "shape": [0], "data": []}'
    for count, accepted in [(json_tensors.MAX_TENSORS, True),
                            (json_tensors.MAX_TENSORS + 1, False)]:
        raw = b"{" + PAD + b'"%s": [' % field.encode() + b", ".join([tensor] * count) + b"]}"
        if accepted:
            assert len(json_tensors.loads(raw, WHAT)[field]) == count
            continue
        with pytest.raises(ServingError) as caught:
            json_tensors.loads(raw, WHAT)
        assert caught.value.kind is ErrorKind.INVALID_ARGUMENT
        assert caught.value.message == (
            f'{WHAT} has more than 1024 tensors in "{field}"; no model has that many')


def many_values(size: int) -> dict[str, bytes]:
    """Large bodies whose skeleton would be a Python object per few bytes."""
    tiny = b'{"name": "x", "datatype": "FP32", "shape": [1], "data": [0]}'
    return {
        "tiny tensors": b'{"inputs": [' + b",".join([tiny] * (size // 62)) + b"]}",
        "tiny parameters": b'{"parameters": {' + b",".join(
            b'"p%07d":1' % i for i in range(size // 13)) + b'}, "inputs": []}',
        "nested text": tensor_body(b"[" + b",".join([b'["ab","cd"]'] * (size // 12)) + b"]",
                                   b"BYTES", b"[%d, 2]" % (size // 12)),
        "objects in data": tensor_body(b"[" + b",".join([b"{}"] * (size // 3)) + b"]",
                                       shape=b"[%d]" % (size // 3)),
        "tiny texts": tensor_body(b"[" + b",".join([b'"ab"'] * (size // 5)) + b"]",
                                  b"BYTES", b"[%d]" % (size // 5)),
    }


@pytest.mark.parametrize("shape", list(many_values(0)))
def test_memory_to_refuse_a_body_of_many_small_values_stays_within_4x(shape):
    """A measured bound: stdlib json (and the parser before) needed 12-27x the body."""
    raw = many_values(4 << 20)[shape]
    peak, outcome = peak_of(lambda: route(raw, "BYTES" if b"BYTES" in raw else "FP32"))
    assert isinstance(outcome, ServingError), shape
    assert outcome.kind is ErrorKind.INVALID_ARGUMENT
    assert ("more than 1024 tensors" in outcome.message or "holds more than" in outcome.message
            or "texts in inputs[0].data, more than one per 8 bytes" in outcome.message), (
        outcome.message)
    assert peak < 4 * len(raw), peak / len(raw)


@pytest.mark.parametrize("shape", list(many_values(0)))
def test_a_small_body_of_many_values_is_read_as_before(shape):
    """Below SMALL_BODY stdlib json reads it all: bounded by that size, whatever the shape."""
    raw = many_values(json_tensors.SMALL_BODY - 1024)[shape]
    assert len(raw) < json_tensors.SMALL_BODY
    peak, doc = peak_of(lambda: json_tensors.loads(raw, WHAT))
    assert isinstance(doc, dict)
    assert peak < 40 * json_tensors.SMALL_BODY


def test_large_text_tensors_decode_as_small_ones_do_and_refuse_as_json_would():
    texts = [f"w{i}\\é\"," for i in range(5000)]
    raw = tensor_body(json.dumps(texts).encode(), b"BYTES", b"[5000]")
    assert len(raw) > json_tensors.SMALL_BODY
    big = json_tensors.loads(raw, WHAT)["inputs"][0]["data"]
    assert isinstance(big, json_tensors.StringArray)
    got = codecs.decode_list("x", "BYTES", [5000], big)
    assert got.tolist() == [t.encode() for t in texts]
    with pytest.raises(ServingError) as caught:  # as a list: text is no FP32
        codecs.decode_list("x", "FP32", [5000], json_tensors.loads(raw, WHAT)["inputs"][0]["data"])
    assert "element 0 is the text" in caught.value.message
    broken = raw.replace(b"w4321", b"w\\x4321")
    with pytest.raises(json.JSONDecodeError) as stdlib:
        json.loads(broken)
    with pytest.raises(ServingError) as caught:
        json_tensors.loads(broken, WHAT)
    assert caught.value.message == f"{WHAT} is not JSON: {stdlib.value}"


def test_memory_to_decode_16_mib_of_short_texts_stays_within_8x():
    """Each element ends as a bytes object (~33 bytes plus its text): the fewest bytes per
    element allowed, `"abcde",`, measured ~7x (the whole list of str first: ~20x)."""
    count = 2 << 20  # 8 bytes each: 16 MiB
    raw = tensor_body(b"[" + b",".join([b'"abcde"'] * count) + b"]", b"BYTES", b"[%d]" % count)
    refuse = raw[:-3] + b",]}]"
    peak, outcome = peak_of(lambda: route(raw, "BYTES"))
    assert outcome[0].shape == (count,) and outcome[0][-1] == b"abcde"
    del outcome
    assert peak < 8 * len(raw), peak / len(raw)
    peak, outcome = peak_of(lambda: route(refuse, "BYTES"))
    assert isinstance(outcome, ServingError) and "not JSON" in outcome.message
    assert peak < 2 * len(refuse), peak / len(refuse)


def test_a_server_refuses_duplicate_keys_and_utf16_then_answers(server):
    features, species = one_of_each()
    good = {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(features.shape),
                        "data": features.ravel().tolist()}]}
    text = json.dumps(good)
    twice = text[:-1] + ', "inputs": []}'
    infer = "/v2/models/penguins/infer"
    headers = {"Content-Type": "application/json"}
    with httpx.Client(base_url=server.http_url, timeout=30) as http:
        answer = http.post(infer, content=twice.encode(), headers=headers)
        assert answer.status_code == 400, answer.text
        assert 'has the key \\"inputs\\" twice' in answer.text
        for encoding in ("utf-16", "utf-16-le", "utf-32"):
            answer = http.post(infer, content=text.encode(encoding), headers=headers)
            assert answer.status_code == 400, (encoding, answer.text)
            assert "must be UTF-8 JSON" in answer.json()["error"]
        answer = http.post(infer, content=text.encode(), headers=headers)
        assert answer.status_code == 200, answer.text
        probabilities = np.asarray(answer.json()["outputs"][0]["data"]).reshape(3, 3)
        assert [LABELS[i] for i in probabilities.argmax(axis=1)] == species

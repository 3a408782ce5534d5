"""The binary tensor data extension of the KServe v2 REST paths, against `zooserve serve`:
malformed binary requests, each a 400 naming what is wrong with the server still answering;
bodies that do not decompress; and BYTES tensors, length-prefixed both ways (checked on the
parser: no shipped model has one)."""

from __future__ import annotations

import gzip
import struct
import zlib

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient

from tests.helpers.binary_requests import (
    HEADER,
    RAW,
    assert_still_serving,
    binary_request,
    tensor,
)


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.http_url, timeout=30) as plain:
        yield plain


# malformed binary requests: each a 400 that names what is wrong, then a good one


MALFORMED = [
    ("header length beyond the body",
     binary_request({"inputs": [tensor(16)]}, RAW, length=10**6), HEADER),
    ("header length not a number",
     binary_request({"inputs": [tensor(16)]}, RAW, length="sixty"), HEADER),
    ("negative header length",
     binary_request({"inputs": [tensor(16)]}, RAW, length=-5), HEADER),
    ("header length cutting the JSON",
     binary_request({"inputs": [tensor(16)]}, RAW, length=10), "JSON header"),
    ("binary sizes adding up to less than the binary data",
     binary_request({"inputs": [tensor(8)]}, RAW), "binary_data_size"),
    ("binary sizes adding up to more than the binary data",
     binary_request({"inputs": [tensor(32)]}, RAW), "binary_data_size"),
    ("a negative binary size",
     binary_request({"inputs": [tensor(-16)]}, RAW), "binary_data_size"),
    ("a binary size as text",
     binary_request({"inputs": [tensor("16")]}, RAW), "binary_data_size"),
    ("a binary size as true",
     binary_request({"inputs": [tensor(True)]}, RAW), "binary_data_size"),
    ("a fractional binary size",
     binary_request({"inputs": [tensor(16.5)]}, RAW), "binary_data_size"),
    ("binary size and data on one tensor",
     binary_request({"inputs": [tensor(16, data=[1, 2, 3, 4])]}, RAW), '"data"'),
    ("binary size without the header",
     binary_request({"inputs": [tensor(16)]}, RAW, length=None), HEADER),
    ("bytes that do not fit the shape",
     binary_request({"inputs": [tensor(12)]}, RAW[:12]), "features"),
    ("parameters that are not an object",
     binary_request({"inputs": [{**tensor(None), "parameters": [16]}]}, RAW), "parameters"),
    ("binary_data_output not a boolean",
     binary_request({"inputs": [tensor(16)], "parameters": {"binary_data_output": "yes"}},
                     RAW), "binary_data_output"),
    ("an output's binary_data not a boolean",
     binary_request({"inputs": [tensor(16)], "outputs": [
         {"name": "probabilities", "parameters": {"binary_data": 1}}]}, RAW), "binary_data"),
    ("the classification extension",
     binary_request({"inputs": [tensor(16)], "outputs": [
         {"name": "probabilities", "parameters": {"classification": 2}}]}, RAW),
     "classification"),
    ("a binary input of the wrong datatype",
     binary_request({"inputs": [tensor(16, datatype="INT32")]}, RAW), "INT32"),
    ("a binary input the model does not have",
     binary_request({"inputs": [tensor(16, name="flippers")]}, RAW), "flippers"),
    ("a binary input without a name",
     binary_request({"inputs": [{"datatype": "FP32", "shape": [1, 4],
                                  "parameters": {"binary_data_size": 16}}]}, RAW), "name"),
    ("a binary input with a shape of text",
     binary_request({"inputs": [tensor(16, shape="1,4")]}, RAW), "shape"),
    ("one input twice, binary and JSON",
     binary_request({"inputs": [tensor(16), tensor(None, data=[1, 2, 3, 4])]}, RAW),
     "more than once"),
    ("a header that is not an object",
     binary_request([tensor(16)], RAW), "JSON object"),
    ("a header that is not JSON",
     (b"{inputs: nope}" + RAW, {HEADER: "14"}), "JSON header"),
]


@pytest.mark.parametrize(("what", "request_", "named"), MALFORMED,
                         ids=[case[0] for case in MALFORMED])
def test_a_malformed_binary_request_is_a_400_naming_the_field(http, what, request_, named):
    body, headers = request_
    answer = http.post("/v2/models/penguins/infer", content=body, headers=headers)
    assert answer.status_code == 400, (what, answer.status_code, answer.text)
    assert named in answer.json()["error"], answer.json()
    assert_still_serving(http)


def test_a_huge_name_is_echoed_only_in_part(http):
    huge = "y" * 100_000
    for huge_input in (tensor(-1, name=huge), tensor(16, name=huge, data=[1, 2, 3, 4]),
                       {**tensor(None, name=huge), "parameters": 16}):
        body, headers = binary_request({"inputs": [huge_input]}, RAW)
        answer = http.post("/v2/models/penguins/infer", content=body, headers=headers)
        assert answer.status_code == 400 and len(answer.json()["error"]) < 1000, answer.text
    assert_still_serving(http)


@pytest.mark.parametrize(("encoding", "body", "status", "named"), [
    ("gzip", b"not gzip at all", 400, "gzip"),
    ("gzip", gzip.compress(b'{"inputs": []}')[:-6], 400, "gzip"),
    ("deflate", zlib.compress(b'{"inputs": []}') + b"extra", 400, "deflate"),
    ("br", b"whatever", 415, "Content-Encoding"),
])
def test_a_body_that_does_not_decompress_is_refused(http, encoding, body, status, named):
    answer = http.post("/v2/models/penguins/infer", content=body,
                       headers={"Content-Encoding": encoding})
    assert answer.status_code == status and named in answer.json()["error"], answer.text
    assert_still_serving(http)


# BYTES tensors: no shipped model has one, so the binary layout is checked on the parser


class _BytesModel:
    """What the binary parser asks of a model, for one BYTES input."""

    name = "texts"

    def input_spec(self, name):
        from zooserve.protocol.errors import invalid_argument
        from zooserve.serving.loaded_model import TensorSpec

        if name != "text":
            raise invalid_argument(f"no input {name!r}")
        return TensorSpec("text", "BYTES", (-1,))

    def check_datatype(self, spec, declared):
        from zooserve.protocol.errors import invalid_argument

        if declared != spec.datatype:
            raise invalid_argument(f"input 'text': datatype {declared} given")


def _length_prefixed(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


def test_binary_bytes_inputs_are_length_prefixed_elements():
    from zooserve.serving.http_frontend import binary

    items = [b"adelie", b"", "gentoo \u00e9".encode(), b"\x00\xff"]
    raw = _length_prefixed(items)
    body, headers = binary_request(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [4],
                     "parameters": {"binary_data_size": len(raw)}}]}, raw)
    request, _ = binary.inference_request(_BytesModel(), body, headers[HEADER])
    assert request.inputs["text"].tolist() == items


@pytest.mark.parametrize("raw", [
    _length_prefixed([b"adelie", b"gentoo"])[:-1],  # the last element cut short
    _length_prefixed([b"adelie"]),  # one element for a shape of two
    _length_prefixed([b"adelie", b"gentoo"]) + b"\x01",  # a stray byte after them
])
def test_malformed_binary_bytes_name_the_input(raw):
    from zooserve.protocol.errors import ServingError
    from zooserve.serving.http_frontend import binary

    body, headers = binary_request(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2],
                     "parameters": {"binary_data_size": len(raw)}}]}, raw)
    with pytest.raises(ServingError) as refused:
        binary.inference_request(_BytesModel(), body, headers[HEADER])
    assert refused.value.kind.name == "INVALID_ARGUMENT" and "'text'" in refused.value.message


def test_binary_bytes_outputs_read_back_with_tritonclient():
    from zooserve.serving.dataplane import InferenceResponse
    from zooserve.serving.http_frontend import binary

    texts = np.array([[b"adelie", b""], ["gentoo \u00e9".encode(), b"\x00\xff"]], dtype=object)
    response = InferenceResponse("texts", 1, {"text": texts, "score": np.ones(2, np.float32)},
                                 {"text": "BYTES", "score": "FP32"})
    answer = binary.infer_response(response, binary.OutputChoice(per_output={"text": True}))
    result = httpclient.InferResult.from_response_body(
        answer.body, header_length=int(answer.headers[HEADER]))
    assert result.as_numpy("text").tolist() == texts.tolist()
    assert result.as_numpy("score").tolist() == [1.0, 1.0]  # JSON, as asked
    assert "data" in result.get_output("score") and "data" not in result.get_output("text")

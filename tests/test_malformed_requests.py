"""A corpus of malformed gRPC requests against one real server: each row names the status
it must get (never INTERNAL/UNKNOWN) and a fragment its message must hold, and after each a
good request must still be answered. Messages stay small: a client's 100 KB name is echoed as
a bounded prefix (zooserve/protocol/limits.py). The HTTP corpus is in
tests/test_malformed_http.py.

gRPC requests are built with tritonclient's protobuf modules: a message another
implementation wrote, not ours checked against itself."""

from __future__ import annotations

import math
import struct

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.helpers.echo_repository import echo_model
from tests.helpers.penguin_rows import LABELS, one_of_each

LONG = "x" * 100_000
# A status message stays well under gRPC's metadata limit, whatever the client sent.
MAX_MESSAGE = 600


@pytest.fixture(scope="module")
def stub(echo_zoo_server):
    with grpc.insecure_channel(echo_zoo_server.url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


# requests


def penguins(shape=(1, 4), data: bytes | None = None, name="features", datatype="FP32",
             model="penguins", version="", **fields) -> pb.ModelInferRequest:
    """A raw-contents penguins request, with one thing changed."""
    request = pb.ModelInferRequest(model_name=model, model_version=version, **fields)
    request.inputs.add(name=name, datatype=datatype, shape=list(shape))
    if data is None:
        count = math.prod(shape) if len(shape) <= 32 and max(shape, default=0) < 1 << 20 else 4
        data = np.ones(max(count, 0), dtype="<f4").tobytes()
    request.raw_input_contents.append(data)
    return request


def typed(datatype: str, field: str, values, shape=(1, 2), model: str | None = None,
          name: str = "value"):
    """A request to the echo model of `datatype` with its elements in contents.`field`."""
    request = pb.ModelInferRequest(model_name=model or echo_model(datatype))
    tensor = request.inputs.add(name=name, datatype=datatype, shape=list(shape))
    getattr(tensor.contents, field).extend(values)
    return request


def raw(datatype: str, data: bytes, shape=(1, 2)) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=echo_model(datatype))
    request.inputs.add(name="value", datatype=datatype, shape=list(shape))
    request.raw_input_contents.append(data)
    return request


def edited(request: pb.ModelInferRequest, change) -> pb.ModelInferRequest:
    change(request)
    return request


def spectra(first=(1, 200), second=(1, 200), only_first=False) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="spectra_similarity")
    for name, shape in [("spectrum_a", first)] + ([] if only_first else [("spectrum_b", second)]):
        request.inputs.add(name=name, datatype="FP32", shape=list(shape))
        request.raw_input_contents.append(np.zeros(shape, "<f4").tobytes())
    return request


def two_fields() -> pb.ModelInferRequest:
    request = typed("FP32", "fp32_contents", [1.0, 2.0])
    request.inputs[0].contents.fp64_contents.extend([1.0, 2.0])
    return request


def both_raw_and_contents() -> pb.ModelInferRequest:
    request = penguins()
    request.inputs[0].contents.fp32_contents.extend([1.0] * 4)
    return request


def lengths(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


NOT_FOUND = grpc.StatusCode.NOT_FOUND
INVALID = grpc.StatusCode.INVALID_ARGUMENT

# (RPC, request, expected status, fragment of its message)
GRPC_CORPUS: dict[str, tuple[str, object, grpc.StatusCode, str]] = {
    # names and versions, on every RPC that takes them
    "infer: unknown model": ("ModelInfer", penguins(model="dolphins"), NOT_FOUND,
                             "model 'dolphins' not found"),
    "infer: empty model name": ("ModelInfer", penguins(model=""), NOT_FOUND, "model '' not found"),
    "infer: 100 KB model name": ("ModelInfer", penguins(model=LONG), NOT_FOUND,
                                 "(100000 characters) not found"),
    "infer: newline in model name": ("ModelInfer", penguins(model="pen\nguins"), NOT_FOUND,
                                     "model 'pen\\nguins' not found"),
    "infer: escape sequence in model name": ("ModelInfer", penguins(model="\x1b[2Jpenguins"),
                                             NOT_FOUND, "'\\x1b[2Jpenguins'"),
    "infer: version 7": ("ModelInfer", penguins(version="7"), NOT_FOUND, "no version '7'"),
    "infer: version '²'": ("ModelInfer", penguins(version="²"), NOT_FOUND, "no version '²'"),
    "infer: Arabic-Indic version": ("ModelInfer", penguins(version="١"), NOT_FOUND,
                                    "no version '١'"),
    "infer: leading zero": ("ModelInfer", penguins(version="01"), NOT_FOUND, "no version '01'"),
    "infer: negative version": ("ModelInfer", penguins(version="-1"), NOT_FOUND,
                                "no version '-1'"),
    "infer: version with a space": ("ModelInfer", penguins(version=" 1"), NOT_FOUND,
                                    "no version ' 1'"),
    "infer: version with a newline": ("ModelInfer", penguins(version="1\n"), NOT_FOUND,
                                      "no version '1\\n'"),
    "infer: 19-digit version": ("ModelInfer", penguins(version="9" * 19), NOT_FOUND,
                                "no version '9999999999999999999'"),
    "infer: 100-digit version": ("ModelInfer", penguins(version="9" * 100), NOT_FOUND,
                                 "(100 characters)"),
    "infer: text version": ("ModelInfer", penguins(version="latest"), NOT_FOUND,
                            "no version 'latest'"),
    "metadata: unknown model": ("ModelMetadata", pb.ModelMetadataRequest(name="dolphins"),
                                NOT_FOUND, "'dolphins' not found"),
    "metadata: version '²'": ("ModelMetadata",
                              pb.ModelMetadataRequest(name="penguins", version="²"),
                              NOT_FOUND, "no version '²'"),
    "metadata: 100-digit version": ("ModelMetadata",
                                    pb.ModelMetadataRequest(name="penguins", version="9" * 100),
                                    NOT_FOUND, "(100 characters)"),
    "metadata: 100 KB name": ("ModelMetadata", pb.ModelMetadataRequest(name=LONG), NOT_FOUND,
                              "(100000 characters)"),
    "config: unknown model": ("ModelConfig", pb.ModelConfigRequest(name="dolphins"), NOT_FOUND,
                              "'dolphins' not found"),
    "config: version '²'": ("ModelConfig", pb.ModelConfigRequest(name="penguins", version="²"),
                            NOT_FOUND, "no version '²'"),
    "config: 100 KB name": ("ModelConfig", pb.ModelConfigRequest(name=LONG), NOT_FOUND,
                            "(100000 characters)"),
    "statistics: unknown model": ("ModelStatistics",
                                  pb.ModelStatisticsRequest(name="dolphins"), NOT_FOUND,
                                  "'dolphins' not found"),
    "statistics: version '²'": ("ModelStatistics",
                                pb.ModelStatisticsRequest(name="penguins", version="²"),
                                NOT_FOUND, "no version '²'"),
    "statistics: version 99": ("ModelStatistics",
                               pb.ModelStatisticsRequest(name="penguins", version="99"),
                               NOT_FOUND, "no version '99'"),
    "statistics: 100-digit version": ("ModelStatistics",
                                      pb.ModelStatisticsRequest(name="penguins",
                                                                version="9" * 100),
                                      NOT_FOUND, "(100 characters)"),
    # tensors: names, datatypes, shapes
    "wrong input name": ("ModelInfer", penguins(name="measurements"), INVALID,
                         "has no input 'measurements'; its inputs are: features"),
    "100 KB input name": ("ModelInfer", penguins(name=LONG), INVALID, "(100000 characters)"),
    "control characters in input name": ("ModelInfer", penguins(name="f\r\n\x00"), INVALID,
                                         "no input 'f\\r\\n\\x00'"),
    "input twice": ("ModelInfer", edited(penguins(), lambda r: (
        r.inputs.add(name="features", datatype="FP32", shape=[1, 4]),
        r.raw_input_contents.append(b"\0" * 16))), INVALID, "'features' appears more than once"),
    "no inputs": ("ModelInfer", pb.ModelInferRequest(model_name="penguins"), INVALID,
                  "input 'features' is missing"),
    "one of two inputs": ("ModelInfer", spectra(only_first=True), INVALID,
                          "input 'spectrum_b' is missing"),
    "inputs disagree on the batch": ("ModelInfer", spectra(second=(2, 200)), INVALID,
                                     "disagree on the batch size"),
    "unknown datatype": ("ModelInfer", penguins(datatype="FLOAT32"), INVALID,
                         "datatype 'FLOAT32' given"),
    "empty datatype": ("ModelInfer", penguins(datatype=""), INVALID, "datatype '' given"),
    "datatype of another width": ("ModelInfer", penguins(datatype="FP64",
                                                         data=b"\0" * 32), INVALID,
                                  "datatype FP64 given, model 'penguins' version 1 expects FP32"),
    "BYTES for FP32": ("ModelInfer", penguins(datatype="BYTES"), INVALID,
                       "datatype BYTES given"),
    "rank 1": ("ModelInfer", penguins(shape=(4,)), INVALID, "has rank 1"),
    "rank 0": ("ModelInfer", penguins(shape=(), data=b"\0" * 4), INVALID, "has rank 0"),
    "rank 33": ("ModelInfer", penguins(shape=(1,) * 33, data=b"\0" * 4), INVALID,
                "33 axes, more than the limit of 32"),
    "rank 70 (beyond numpy's 64)": ("ModelInfer", penguins(shape=(1,) * 70, data=b"\0" * 4),
                                    INVALID, "70 axes"),
    "rank 100000": ("ModelInfer", penguins(shape=(1,) * 100_000, data=b"\0" * 4), INVALID,
                    "100000 axes"),
    "negative dimension": ("ModelInfer", penguins(shape=(-1, 4), data=b"\0" * 16), INVALID,
                           "negative"),
    "dimension of 2**62": ("ModelInfer", penguins(shape=(2**62, 4), data=b""), INVALID,
                           "more elements than the limit of 268435456"),
    "dimensions whose product overflows int64": ("ModelInfer",
                                                 penguins(shape=(2**40, 2**40), data=b""),
                                                 INVALID, "more elements than the limit"),
    "wrong width": ("ModelInfer", penguins(shape=(1, 5)), INVALID, "axis 1 must be 4"),
    "batch over the maximum": ("ModelInfer", penguins(shape=(1025, 4)), INVALID,
                               "batch size 1025 exceeds the maximum of 1024"),
    # raw vs contents
    "raw buffer too short": ("ModelInfer", penguins(shape=(2, 4), data=b"\0" * 16), INVALID,
                             "raw content has 16 bytes, but shape [2, 4] of FP32 needs 32"),
    "raw buffer too long": ("ModelInfer", penguins(data=b"\0" * 17), INVALID,
                            "raw content has 17 bytes"),
    "more raw buffers than inputs": ("ModelInfer", edited(penguins(), lambda r:
                                                          r.raw_input_contents.append(b"")),
                                     INVALID, "1 inputs but 2 raw_input_contents"),
    "raw and typed contents": ("ModelInfer", both_raw_and_contents(), INVALID,
                               "send contents or raw_input_contents, not both"),
    "no data": ("ModelInfer", edited(pb.ModelInferRequest(model_name="penguins"), lambda r:
                                     r.inputs.add(name="features", datatype="FP32",
                                                  shape=[1, 4])),
                INVALID, "'features' has no data"),
    "typed contents, wrong count": ("ModelInfer", typed("FP32", "fp32_contents", [1.0, 2.0, 3.0],
                                                        shape=(1, 4), model="penguins",
                                                        name="features"),
                                    INVALID, "3 elements given, but shape [1, 4] needs 4"),
    "typed contents in the wrong list": ("ModelInfer", typed("FP32", "fp64_contents", [1.0, 2.0]),
                                         INVALID, "FP32 elements go in contents.fp32_contents"),
    "typed contents in two lists": ("ModelInfer", two_fields(), INVALID,
                                    "contents.fp64_contents holds 2"),
    # every datatype's range, over typed contents
    "INT8 128": ("ModelInfer", typed("INT8", "int_contents", [128, 0]), INVALID,
                 "element 0 (128) is out of the range of INT8"),
    "INT8 -129": ("ModelInfer", typed("INT8", "int_contents", [0, -129]), INVALID,
                  "element 1 (-129) is out of the range of INT8"),
    "INT16 40000": ("ModelInfer", typed("INT16", "int_contents", [40000, 0]), INVALID,
                    "(40000) is out of the range of INT16"),
    "INT32 in uint_contents": ("ModelInfer", typed("INT32", "uint_contents", [1, 2]), INVALID,
                               "INT32 elements go in contents.int_contents"),
    "INT64 in int_contents": ("ModelInfer", typed("INT64", "int_contents", [1, 2]), INVALID,
                              "INT64 elements go in contents.int64_contents"),
    "UINT8 256": ("ModelInfer", typed("UINT8", "uint_contents", [1, 256]), INVALID,
                  "(256) is out of the range of UINT8"),
    "UINT16 70000": ("ModelInfer", typed("UINT16", "uint_contents", [70000, 1]), INVALID,
                     "(70000) is out of the range of UINT16"),
    "UINT32 negative, in int_contents": ("ModelInfer", typed("UINT32", "int_contents", [-1, 1]),
                                         INVALID, "UINT32 elements go in contents.uint_contents"),
    "UINT64 in int64_contents": ("ModelInfer", typed("UINT64", "int64_contents", [-1, 1]),
                                 INVALID, "UINT64 elements go in contents.uint64_contents"),
    "BOOL in int_contents": ("ModelInfer", typed("BOOL", "int_contents", [2, 1]), INVALID,
                             "BOOL elements go in contents.bool_contents"),
    "FP16 has no typed list": ("ModelInfer", typed("FP16", "fp32_contents", [1.0, 2.0]), INVALID,
                               "FP16 has no typed contents list"),
    "FP16 raw of 3 bytes": ("ModelInfer", raw("FP16", b"\0" * 3), INVALID,
                            "raw content has 3 bytes, but shape [1, 2] of FP16 needs 4"),
    "FP64 raw of 8 bytes": ("ModelInfer", raw("FP64", b"\0" * 8), INVALID,
                            "of FP64 needs 16 bytes"),
    "UINT8 raw of 3 bytes": ("ModelInfer", raw("UINT8", b"\0" * 3), INVALID,
                             "of UINT8 needs 2 bytes"),
    "BYTES prefix past the end": ("ModelInfer", raw("BYTES", b"\x05\0\0\0ab"), INVALID,
                                  "does not hold 2 length-prefixed elements"),
    "BYTES shape beyond the buffer": ("ModelInfer", raw("BYTES", lengths(b"a", b"b"),
                                                        shape=(1000, 2)),
                                      INVALID, "does not hold 2000 length-prefixed elements"),
    "BYTES bytes left over": ("ModelInfer", raw("BYTES", lengths(b"a", b"b") + b"!"), INVALID,
                              "(11 bytes) does not hold 2"),
    "BYTES typed, not UTF-8": ("ModelInfer", typed("BYTES", "bytes_contents", [b"ok", b"\xff"]),
                               INVALID, "element 1 is not UTF-8 text"),
    "BYTES typed, wrong count": ("ModelInfer", typed("BYTES", "bytes_contents", [b"a"]), INVALID,
                                 "1 elements given, but shape [1, 2] needs 2"),
    # outputs, id
    "unknown requested output": ("ModelInfer", edited(penguins(), lambda r:
                                                      r.outputs.add(name="logits")),
                                 INVALID, "no output 'logits'; its outputs are: probabilities"),
    "100 KB requested output": ("ModelInfer", edited(penguins(), lambda r:
                                                     r.outputs.add(name=LONG)),
                                INVALID, "(100000 characters)"),
    "id of 2000 characters": ("ModelInfer", penguins(id="i" * 2000), INVALID,
                              "request id of 2000 characters; at most 1024"),
    # streaming: the error is the response's error_message, the stream goes on
    "stream: unknown model": ("ModelStreamInfer", penguins(model="dolphins"), NOT_FOUND,
                              "'dolphins' not found"),
    "stream: version '²'": ("ModelStreamInfer", penguins(version="²"), NOT_FOUND,
                            "no version '²'"),
    "stream: rank 70": ("ModelStreamInfer", penguins(shape=(1,) * 70, data=b"\0" * 4), INVALID,
                        "70 axes"),
    "stream: INT8 out of range": ("ModelStreamInfer", typed("INT8", "int_contents", [1000, 0]),
                                  INVALID, "out of the range of INT8"),
    "stream: 100 KB model name": ("ModelStreamInfer", penguins(model=LONG), NOT_FOUND,
                                  "(100000 characters)"),
}


def good_grpc(stub) -> None:
    features, species = one_of_each()
    request = penguins(shape=features.shape, data=features.astype("<f4").tobytes())
    response = stub.ModelInfer(request, timeout=30)
    probabilities = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(3, 3)
    assert [LABELS[i] for i in probabilities.argmax(axis=1)] == species


def test_the_grpc_corpus_is_large():
    assert len(GRPC_CORPUS) + len(READY_CORPUS) >= 60


@pytest.mark.parametrize("case", list(GRPC_CORPUS))
def test_malformed_grpc_request(stub, case):
    method, request, code, fragment = GRPC_CORPUS[case]
    if method == "ModelStreamInfer":
        (answer,) = list(stub.ModelStreamInfer(iter([request]), timeout=30))
        message = answer.error_message
        assert message, answer
    else:
        with pytest.raises(grpc.RpcError) as caught:
            getattr(stub, method)(request, timeout=30)
        assert caught.value.code() == code, (caught.value.code(), caught.value.details())
        message = caught.value.details()
    assert fragment in message, (fragment, message)
    assert len(message) <= MAX_MESSAGE, len(message)
    good_grpc(stub)


# ModelReady answers rather than fails: false for anything that is not a served version.
READY_CORPUS = {
    "unknown model": pb.ModelReadyRequest(name="dolphins"),
    "100 KB name": pb.ModelReadyRequest(name=LONG),
    "version '²'": pb.ModelReadyRequest(name="penguins", version="²"),
    "100-digit version": pb.ModelReadyRequest(name="penguins", version="9" * 100),
    "version with a newline": pb.ModelReadyRequest(name="penguins", version="1\n"),
}


@pytest.mark.parametrize("case", list(READY_CORPUS))
def test_model_ready_of_a_malformed_name_is_false(stub, case):
    assert stub.ModelReady(READY_CORPUS[case], timeout=30).ready is False
    assert stub.ModelReady(pb.ModelReadyRequest(name="penguins"), timeout=30).ready is True
    good_grpc(stub)


def test_untrusted_names_cannot_forge_log_lines(stub, echo_zoo_server):
    forged = "penguins\n2099-01-01 00:00:00,000 ERROR forged: a line the client wrote"
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(penguins(model=forged), timeout=30)
    with pytest.raises(grpc.RpcError):
        stub.ModelInfer(penguins(name=LONG), timeout=30)
    log = echo_zoo_server.log()
    assert "\n2099-01-01" not in log
    assert "2099-01-01 00:00:00,000 ERROR forged" in log  # quoted, on the line of its error
    assert LONG not in log  # cut to a prefix



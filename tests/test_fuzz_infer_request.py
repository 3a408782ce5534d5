"""Hypothesis over every field of ModelInferRequest (model name, version, id, parameters,
inputs with their names, datatypes, shapes, typed contents and parameters, raw buffers,
requested outputs), sent to one real server: whatever comes, the answer is OK, NOT_FOUND or
INVALID_ARGUMENT, never INTERNAL or UNKNOWN, its message is small, and the server still
answers a good request at the end.

Derandomised and without an example database, so CI runs the same 2,000 examples every
time. Requests are built with tritonclient's protobuf modules: a message another
implementation wrote, not ours checked against itself."""

from __future__ import annotations

import math

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.helpers.echo_repository import ECHO_TYPES, build_echo_repository, echo_model
from tests.helpers.penguin_rows import LABELS, one_of_each
from tests.helpers.server import run_server

EXAMPLES = 2000
ANSWERS = {grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT}
DATATYPES = list(ECHO_TYPES)
ITEMSIZE = {"BOOL": 1, "INT8": 1, "UINT8": 1, "INT16": 2, "UINT16": 2, "FP16": 2, "INT32": 4,
            "UINT32": 4, "FP32": 4, "INT64": 8, "UINT64": 8, "FP64": 8}
MODEL_NAMES = ["penguins", "spectra_similarity"] + [echo_model(d) for d in DATATYPES]


@pytest.fixture(scope="module")
def stub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fuzz")
    with run_server(build_echo_repository(tmp / "models"), tmp) as running, \
            grpc.insecure_channel(running.url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def odd_text(max_size: int = 24) -> st.SearchStrategy[str]:
    return st.text(max_size=max_size) | st.sampled_from(["", "\n", "x" * 5000, "\x1b[2J"])


# Each model's inputs and their datatype, so most requests get past the lookup.
SIGNATURES = {"penguins": (["features"], "FP32", [1, 4]),
              "spectra_similarity": (["spectrum_a", "spectrum_b"], "FP32", [1, 200]),
              **{echo_model(d): (["value"], d, [1, 2]) for d in DATATYPES}}


def mostly(likely: st.SearchStrategy, unlikely: st.SearchStrategy) -> st.SearchStrategy:
    """`likely` nine times in ten."""
    return st.integers(0, 9).flatmap(lambda i: unlikely if i == 0 else likely)


versions = mostly(st.sampled_from(["", "1"]),
                  st.sampled_from(["2", "01", "0", "-1", " 1", "²", "١", "9" * 18, "9" * 19,
                                   "9" * 200]) | odd_text(8))
dimensions = st.integers(-2, 6) | st.sampled_from([0, 200, 1025, 2**31, 2**40, 2**62])
odd_shapes = st.lists(dimensions, max_size=5) | st.lists(st.just(1), min_size=30, max_size=80)

# Values of each typed list, within what its wire type can carry.
TYPED_VALUES = {
    "bool_contents": st.booleans(),
    "int_contents": st.integers(-(2**31), 2**31 - 1)
    | st.sampled_from([-129, -128, 127, 128, 255, 256, 32767, 32768, 65535, 65536]),
    "int64_contents": st.integers(-(2**63), 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1) | st.sampled_from([255, 256, 65535, 65536]),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "bytes_contents": st.binary(max_size=12) | st.text(max_size=6).map(str.encode),
}


CONTENTS_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents",
                  "INT32": "int_contents", "INT64": "int64_contents", "UINT8": "uint_contents",
                  "UINT16": "uint_contents", "UINT32": "uint_contents",
                  "UINT64": "uint64_contents", "FP32": "fp32_contents",
                  "FP64": "fp64_contents", "BYTES": "bytes_contents"}


@st.composite
def typed_contents(draw, datatype: str, shape: list[int]) -> dict[str, list]:
    """Mostly the datatype's own list with as many elements as the shape needs; sometimes
    other lists, or two."""
    field = CONTENTS_FIELD.get(datatype)
    count = math.prod(shape) if shape and min(shape) >= 0 else -1
    if field and 0 <= count <= 512 and draw(st.integers(0, 3)):
        return {field: draw(st.lists(TYPED_VALUES[field], min_size=count, max_size=count))}
    fields = draw(st.lists(st.sampled_from(list(TYPED_VALUES)), max_size=2, unique=True))
    return {f: draw(st.lists(TYPED_VALUES[f], max_size=12)) for f in fields}


@st.composite
def raw_for(draw, datatype: str, shape: list[int]) -> bytes:
    """A raw buffer: random bytes, or one sized for the shape (well-formed BYTES elements),
    so the fuzzing reaches past the size checks into the model."""
    count = math.prod(shape) if shape and min(shape) >= 0 else -1
    if 0 <= count <= 512 and draw(st.integers(0, 3)):
        if datatype == "BYTES":
            items = draw(st.lists(st.binary(max_size=5), min_size=count, max_size=count))
            return b"".join(len(i).to_bytes(4, "little") + i for i in items)
        if datatype in ITEMSIZE:
            return draw(st.binary(min_size=count * ITEMSIZE[datatype],
                                  max_size=count * ITEMSIZE[datatype]))
    return draw(st.binary(max_size=64))


parameters = st.dictionaries(
    odd_text(12),
    st.builds(lambda v: pb.InferParameter(bool_param=v), st.booleans())
    | st.builds(lambda v: pb.InferParameter(int64_param=v), st.integers(-(2**63), 2**63 - 1))
    | st.builds(lambda v: pb.InferParameter(string_param=v), st.text(max_size=10))
    | st.builds(lambda v: pb.InferParameter(double_param=v), st.floats())
    | st.just(pb.InferParameter()),
    max_size=3,
)


@st.composite
def infer_requests(draw) -> pb.ModelInferRequest:
    model = draw(mostly(st.sampled_from(MODEL_NAMES), odd_text()))
    input_names, model_datatype, model_shape = SIGNATURES.get(model, (["features"], "FP32",
                                                                      [1, 4]))
    request = pb.ModelInferRequest(
        model_name=model, model_version=draw(versions),
        id=draw(mostly(st.text(max_size=16), st.just("i" * 1500))),
    )
    for key, value in draw(parameters).items():
        request.parameters[key].CopyFrom(value)
    raw_mode = draw(st.sampled_from(["raw", "raw", "typed", "mixed", "count mismatch"]))
    for position in range(draw(mostly(st.just(len(input_names)), st.integers(0, 3)))):
        name = draw(mostly(st.just(input_names[position % len(input_names)]), odd_text()))
        datatype = draw(mostly(st.just(model_datatype),
                               st.sampled_from(DATATYPES + ["", "FLOAT32", "fp32"])))
        rows = draw(st.integers(0, 3))
        shape = draw(mostly(st.just([rows, *model_shape[1:]]), odd_shapes))
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape)
        for key, value in draw(parameters).items():
            tensor.parameters[key].CopyFrom(value)
        if raw_mode != "typed":
            request.raw_input_contents.append(draw(raw_for(datatype, shape)))
        if raw_mode in ("typed", "mixed") and draw(st.booleans()):
            for field, values in draw(typed_contents(datatype, shape)).items():
                getattr(tensor.contents, field).extend(values)
    if raw_mode == "count mismatch":
        request.raw_input_contents.append(draw(st.binary(max_size=8)))
    for name in draw(st.lists(st.sampled_from(["probabilities", "same", "similarity"])
                              | odd_text(), max_size=3)):
        request.outputs.add(name=name)
    return request


def good_request(stub) -> None:
    features, species = one_of_each()
    request = pb.ModelInferRequest(model_name="penguins")
    request.inputs.add(name="features", datatype="FP32", shape=list(features.shape))
    request.raw_input_contents.append(features.astype("<f4").tobytes())
    response = stub.ModelInfer(request, timeout=30)
    probabilities = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(3, 3)
    assert [LABELS[i] for i in probabilities.argmax(axis=1)] == species


def test_no_request_gets_an_internal_error(stub):
    seen: dict[grpc.StatusCode, int] = {}

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(request=infer_requests())
    def answered_as_a_client_error(request):
        try:
            stub.ModelInfer(request, timeout=30)
            code, message = grpc.StatusCode.OK, ""
        except grpc.RpcError as error:
            code, message = error.code(), error.details() or ""
        seen[code] = seen.get(code, 0) + 1
        assert code in ANSWERS, (code, message, request)
        assert len(message) < 1500, message

    answered_as_a_client_error()
    print(f"\nfuzz: {sum(seen.values())} requests, "
          + ", ".join(f"{code.name} {n}" for code, n in sorted(seen.items(), key=str)))
    assert sum(seen.values()) >= EXAMPLES
    assert len(seen) > 1  # the requests reached more than one kind of answer
    good_request(stub)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(MODEL_NAMES) | odd_text(), version=versions)
def test_names_and_versions_on_every_rpc(stub, name, version):
    """ModelMetadata, ModelConfig and ModelStatistics answer or say NOT_FOUND; ModelReady
    answers."""
    for method, message in [("ModelMetadata", pb.ModelMetadataRequest),
                            ("ModelConfig", pb.ModelConfigRequest),
                            ("ModelStatistics", pb.ModelStatisticsRequest)]:
        try:
            getattr(stub, method)(message(name=name, version=version), timeout=30)
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.NOT_FOUND, (method, error.details())
            assert len(error.details()) < 1500
    ready = stub.ModelReady(pb.ModelReadyRequest(name=name, version=version), timeout=30)
    assert ready.ready == (name in MODEL_NAMES and version in ("", "1"))

"""Every client mistake gets the right gRPC status and a message naming the tensor, what was
expected and what came; and the server keeps serving: each case is followed by a good request."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.helpers.penguin_rows import LABELS, one_of_each


@pytest.fixture(scope="module")
def stub(server):
    with grpc.insecure_channel(server.url) as channel:
        yield service_pb2_grpc.GRPCInferenceServiceStub(channel)


def raw_request(model="penguins", name="features", datatype="FP32", shape=(1, 4),
                data: bytes | None = None, version="") -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, model_version=version)
    request.inputs.add(name=name, datatype=datatype, shape=list(shape))
    if data is None:
        data = np.ones(shape, dtype="<f4").tobytes()
    request.raw_input_contents.append(data)
    return request


def assert_still_serving(stub):
    features, species = one_of_each()
    request = raw_request(shape=features.shape, data=features.astype("<f4").tobytes())
    response = stub.ModelInfer(request, timeout=10)
    probabilities = np.frombuffer(response.raw_output_contents[0], "<f4").reshape(3, 3)
    assert [LABELS[i] for i in probabilities.argmax(axis=1)] == species


def call_fails(stub, request, method="ModelInfer") -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, method)(request, timeout=10)
    return caught.value


CASES = {
    "unknown model": (
        raw_request(model="no_such_model"),
        grpc.StatusCode.NOT_FOUND, ["no_such_model", "penguins"],
    ),
    "unknown version": (
        raw_request(version="7"),
        grpc.StatusCode.NOT_FOUND, ["version '7'", "versions served: 1"],
    ),
    "non-numeric version": (
        raw_request(version="latest"),
        grpc.StatusCode.NOT_FOUND, ["version 'latest'"],
    ),
    "wrong input name": (
        raw_request(name="measurements"),
        grpc.StatusCode.INVALID_ARGUMENT, ["'measurements'", "features"],
    ),
    "wrong dtype": (
        raw_request(datatype="FP64", data=np.ones((1, 4), "<f8").tobytes()),
        grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "FP64", "FP32"],
    ),
    "unknown dtype": (
        raw_request(datatype="FLOAT32"),
        grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "FLOAT32", "FP32"],
    ),
    "wrong rank": (
        raw_request(shape=(4,)),
        grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "rank 1", "rank 2"],
    ),
    "wrong width": (
        raw_request(shape=(1, 5)),
        grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "[1, 5]", "axis 1 must be 4"],
    ),
    "raw bytes do not match the shape": (
        raw_request(shape=(2, 4), data=np.ones((1, 4), "<f4").tobytes()),
        grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "16 bytes", "32 bytes"],
    ),
    "negative dimension": (
        raw_request(shape=(-1, 4), data=b"\0" * 16),
        grpc.StatusCode.INVALID_ARGUMENT, ["'features'", "negative"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_client_mistake_gets_a_clear_status_and_the_server_keeps_serving(stub, case):
    request, code, fragments = CASES[case]
    error = call_fails(stub, request)
    assert error.code() == code, error.details()
    for fragment in fragments:
        assert fragment in error.details(), (fragment, error.details())
    assert_still_serving(stub)


def test_missing_input(stub):
    request = service_pb2.ModelInferRequest(model_name="penguins")
    error = call_fails(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'features' is missing" in error.details()
    assert_still_serving(stub)


def test_input_without_any_data(stub):
    request = service_pb2.ModelInferRequest(model_name="penguins")
    request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    error = call_fails(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'features' has no data" in error.details()
    assert_still_serving(stub)


def test_typed_contents_with_the_wrong_count(stub):
    request = service_pb2.ModelInferRequest(model_name="penguins")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=[2, 4])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0])
    error = call_fails(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'features': 3 elements given" in error.details()
    assert "needs 8" in error.details()
    assert_still_serving(stub)


def test_more_raw_buffers_than_inputs(stub):
    request = raw_request()
    request.raw_input_contents.append(b"\0" * 16)
    error = call_fails(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1 inputs but 2 raw_input_contents" in error.details()
    assert_still_serving(stub)


def test_unknown_requested_output(stub):
    request = raw_request()
    request.outputs.add(name="logits")
    error = call_fails(stub, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no output 'logits'" in error.details() and "probabilities" in error.details()
    assert_still_serving(stub)


@pytest.mark.parametrize("method,message", [
    ("ModelMetadata", service_pb2.ModelMetadataRequest(name="no_such_model")),
    ("ModelConfig", service_pb2.ModelConfigRequest(name="no_such_model")),
    ("ModelStatistics", service_pb2.ModelStatisticsRequest(name="no_such_model")),
])
def test_metadata_of_an_unknown_model_is_not_found(stub, method, message):
    error = call_fails(stub, message, method)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no_such_model" in error.details()
    assert_still_serving(stub)


def test_failures_are_counted(stub):
    def failures():
        stats = stub.ModelStatistics(service_pb2.ModelStatisticsRequest(name="penguins"))
        return stats.model_stats[0].inference_stats.fail.count

    before = failures()
    call_fails(stub, raw_request(shape=(1, 5)))
    assert failures() == before + 1

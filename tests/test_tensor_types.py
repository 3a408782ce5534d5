"""Datatypes beyond the zoo's FP32 through a real server and Triton's client: a model that
echoes text (BYTES, raw length-prefixed on the wire) and one that echoes FP16 (raw only,
the protocol has no typed FP16 list), plus typed contents for BYTES. The models are tiny
ONNX Identity graphs built here."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers.echo_repository import build_identity_model
from tests.helpers.server import run_server


@pytest.fixture(scope="module")
def echo_server(tmp_path_factory):
    from onnx import TensorProto

    tmp = tmp_path_factory.mktemp("echo")
    repository = tmp / "models"
    build_identity_model(repository, "echo_text", TensorProto.STRING)
    build_identity_model(repository, "echo_half", TensorProto.FLOAT16)
    with run_server(repository, tmp) as running:
        yield running


@pytest.fixture(scope="module")
def client(echo_server):
    client = grpcclient.InferenceServerClient(echo_server.url)
    yield client
    client.close()


def infer(client, model: str, array: np.ndarray, datatype: str) -> np.ndarray:
    tensor = grpcclient.InferInput("value", list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return client.infer(model, [tensor]).as_numpy("same")


def test_metadata_names_the_datatypes(client):
    assert client.get_model_metadata("echo_text").inputs[0].datatype == "BYTES"
    assert client.get_model_metadata("echo_half").outputs[0].datatype == "FP16"


def test_raw_bytes_round_trip(client):
    texts = np.array([[b"Adelie", b""], ["Gentoo \u00e9".encode(), b"with\x00nul"]], dtype=object)
    echoed = infer(client, "echo_text", texts, "BYTES")
    assert echoed.shape == (2, 2)
    assert echoed.tolist() == texts.tolist()


def test_bytes_that_are_not_text_are_the_clients_mistake(client):
    # ONNX Runtime's string tensors hold UTF-8 text: other bytes cannot reach the model.
    with pytest.raises(InferenceServerException) as caught:
        infer(client, "echo_text", np.array([[b"ok", b"\xff\xfe"]], dtype=object), "BYTES")
    assert "StatusCode.INVALID_ARGUMENT" in caught.value.status()
    assert "input 'value': element 1 is not UTF-8" in caught.value.message()


def test_raw_fp16_round_trip(client):
    halves = np.array([[0.5, -1.25], [65504.0, 1e-3]], dtype=np.float16)
    echoed = infer(client, "echo_half", halves, "FP16")
    assert echoed.dtype == np.float16
    np.testing.assert_array_equal(echoed, halves)


def test_typed_bytes_contents(echo_server):
    request = service_pb2.ModelInferRequest(model_name="echo_text")
    tensor = request.inputs.add(name="value", datatype="BYTES", shape=[1, 2])
    tensor.contents.bytes_contents.extend([b"Chinstrap", b"x"])
    with grpc.insecure_channel(echo_server.url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert response.outputs[0].datatype == "BYTES"
    assert response.raw_output_contents[0] == b"\x09\x00\x00\x00Chinstrap\x01\x00\x00\x00x"


def test_fp16_has_no_typed_list(echo_server):
    request = service_pb2.ModelInferRequest(model_name="echo_half")
    tensor = request.inputs.add(name="value", datatype="FP16", shape=[1, 2])
    tensor.contents.fp32_contents.extend([1.0, 2.0])
    with grpc.insecure_channel(echo_server.url) as channel, pytest.raises(grpc.RpcError) as caught:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "FP16 has no typed contents list" in caught.value.details()


def test_declared_datatype_is_checked_against_the_signature(client):
    with pytest.raises(InferenceServerException) as caught:
        infer(client, "echo_half", np.ones((1, 2), dtype=np.float32), "FP32")
    assert "StatusCode.INVALID_ARGUMENT" in caught.value.status()
    assert "datatype FP32 given" in caught.value.message()
    assert "expects FP16" in caught.value.message()


def test_broken_bytes_buffer_is_invalid_argument(echo_server):
    request = service_pb2.ModelInferRequest(model_name="echo_text")
    request.inputs.add(name="value", datatype="BYTES", shape=[1, 2])
    request.raw_input_contents.append(b"\x05\x00\x00\x00ab")  # says 5 bytes, holds 2
    with grpc.insecure_channel(echo_server.url) as channel, pytest.raises(grpc.RpcError) as caught:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "input 'value'" in caught.value.details()
    assert infer(client=grpcclient.InferenceServerClient(echo_server.url), model="echo_text",
                 array=np.array([[b"a", b"b"]], dtype=object), datatype="BYTES").shape == (1, 2)

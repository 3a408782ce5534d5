"""The standard gRPC health service (as Kubernetes gRPC probes use it) and server reflection."""

from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests.helpers.server import run_server


@pytest.fixture(scope="module")
def channel(server):
    with grpc.insecure_channel(server.url) as channel:
        yield channel


@pytest.mark.parametrize("service", ["", "inference.GRPCInferenceService", "penguins"])
def test_health_is_serving(channel, service):
    response = health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_health_of_an_unknown_model_is_not_found(channel):
    with pytest.raises(grpc.RpcError) as caught:
        health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service="no_such_model"), timeout=5
        )
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def _reflect(channel, request: reflection_pb2.ServerReflectionRequest):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    return next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5)))


def test_reflection_lists_the_services(channel):
    response = _reflect(channel, reflection_pb2.ServerReflectionRequest(list_services=""))
    names = {s.name for s in response.list_services_response.service}
    assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= names


def test_reflection_describes_the_inference_service(channel):
    from google.protobuf import descriptor_pb2

    response = _reflect(
        channel,
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="inference.GRPCInferenceService"
        ),
    )
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in response.file_descriptor_response.file_descriptor_proto
    ]
    methods = {m.name for f in files for s in f.service for m in s.method}
    assert {"ModelInfer", "ModelMetadata", "ModelConfig", "ModelStatistics"} <= methods


def test_a_model_that_fails_to_load_is_reported_and_the_rest_still_serve(copy_model, tmp_path):
    repo = copy_model("penguins")
    broken = repo / "broken" / "1"
    broken.mkdir(parents=True)
    (broken / "model.onnx").write_bytes(b"this is not an onnx model")
    import tritonclient.grpc as grpcclient

    with run_server(repo, tmp_path) as running:
        client = grpcclient.InferenceServerClient(running.url)
        assert client.is_server_ready()  # the models it could load serve; the failure is named
        assert client.is_model_ready("penguins")
        assert not client.is_model_ready("broken")
        index = {(m.name, m.state) for m in client.get_model_repository_index().models}
        assert ("broken", "UNAVAILABLE") in index and ("penguins", "READY") in index
        with grpc.insecure_channel(running.url) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def health(service: str) -> int:
                return stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status

            assert health("") == health_pb2.HealthCheckResponse.SERVING
            assert health("penguins") == health_pb2.HealthCheckResponse.SERVING
            assert health("broken") == health_pb2.HealthCheckResponse.NOT_SERVING
        assert "could not load broken version 1" in running.log()


def test_require_all_models_keeps_the_server_unready_when_one_fails(copy_model, tmp_path):
    repo = copy_model("penguins")
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.onnx").write_bytes(b"this is not an onnx model")
    import tritonclient.grpc as grpcclient

    with run_server(repo, tmp_path, "--require-all-models", "true") as running:
        client = grpcclient.InferenceServerClient(running.url)
        assert not client.is_server_ready()
        assert client.is_model_ready("penguins")
        with grpc.insecure_channel(running.url) as channel:
            overall = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=5
            )
        assert overall.status == health_pb2.HealthCheckResponse.NOT_SERVING

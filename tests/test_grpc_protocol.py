"""The Open Inference Protocol over gRPC, spoken by tritonclient (a client others wrote)
to a real `zooserve serve` process on the shipped repository."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.helpers.penguin_rows import LABELS, load_measured, one_of_each


def test_server_is_live_and_ready(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    assert triton.is_model_ready("penguins")
    assert triton.is_model_ready("penguins", "1")
    assert not triton.is_model_ready("no_such_model")


def test_server_metadata_names_zooserve_and_its_extensions(triton):
    metadata = triton.get_server_metadata()
    assert metadata.name == "zooserve"
    assert metadata.version
    assert "statistics" in metadata.extensions
    assert "model_configuration" in metadata.extensions


def test_model_metadata_gives_the_signature(triton):
    metadata = triton.get_model_metadata("penguins")
    assert metadata.name == "penguins"
    assert "1" in metadata.versions
    assert metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        ("features", "FP32", [-1, 4])
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        ("probabilities", "FP32", [-1, 3])
    ]


def test_model_config_follows_triton_conventions(triton):
    config = triton.get_model_config("penguins").config
    assert config.name == "penguins"
    assert config.platform == "onnxruntime_onnx"
    assert config.max_batch_size > 0
    # with batching, dims leave out the batch axis
    assert [(i.name, list(i.dims)) for i in config.input] == [("features", [4])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("probabilities", [3])]
    assert config.input[0].data_type == grpcclient.model_config_pb2.TYPE_FP32
    assert json.loads(config.parameters["labels"].string_value) == LABELS
    # the providers really in use, read back from the session: this machine has no GPU
    assert config.parameters["execution_providers"].string_value == "CPUExecutionProvider"
    assert config.instance_group[0].kind == grpcclient.model_config_pb2.ModelInstanceGroup.KIND_CPU


def _infer(triton, features: np.ndarray, **kwargs) -> np.ndarray:
    tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    result = triton.infer("penguins", [tensor], **kwargs)
    return result.as_numpy("probabilities")


def test_infer_with_raw_contents_gives_the_right_species(triton):
    features, species = one_of_each()
    probabilities = _infer(triton, features)
    assert probabilities.shape == (3, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert [LABELS[i] for i in probabilities.argmax(axis=1)] == species


def test_infer_on_the_whole_data_set_is_accurate(triton):
    features, species = load_measured()
    predicted = [LABELS[i] for i in _infer(triton, features).argmax(axis=1)]
    accuracy = np.mean([p == s for p, s in zip(predicted, species, strict=True)])
    assert accuracy >= 0.95


def test_infer_with_typed_contents_matches_raw(server, triton):
    features, species = one_of_each()
    request = service_pb2.ModelInferRequest(model_name="penguins", id="typed-1")
    tensor = request.inputs.add(name="features", datatype="FP32", shape=list(features.shape))
    tensor.contents.fp32_contents.extend(features.reshape(-1).tolist())
    import grpc

    with grpc.insecure_channel(server.url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert response.id == "typed-1"
    assert response.model_version == "1"
    out = response.outputs[0]
    assert (out.name, out.datatype, list(out.shape)) == ("probabilities", "FP32", [3, 3])
    typed = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(3, 3)
    np.testing.assert_allclose(typed, _infer(triton, features), rtol=1e-6)
    assert [LABELS[i] for i in typed.argmax(axis=1)] == species


def test_requested_outputs_are_honoured(triton):
    features, _ = one_of_each()
    tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    result = triton.infer(
        "penguins", [tensor], outputs=[grpcclient.InferRequestedOutput("probabilities")]
    )
    assert [o.name for o in result.get_response().outputs] == ["probabilities"]


def test_statistics_count_the_calls(triton):
    def counts():
        stats = triton.get_inference_statistics("penguins", "1").model_stats[0]
        return stats.inference_count, stats.execution_count, stats.inference_stats.success.count

    before = counts()
    features, _ = one_of_each()
    _infer(triton, features)  # 3 samples, 1 execution
    _infer(triton, features[:1])  # 1 sample, 1 execution
    after = counts()
    assert (after[0] - before[0], after[1] - before[1], after[2] - before[2]) == (4, 2, 2)
    stats = triton.get_inference_statistics("penguins", "1").model_stats[0]
    assert stats.last_inference > 0
    assert stats.inference_stats.compute_infer.ns > 0
    assert {b.batch_size for b in stats.batch_stats} >= {1, 3}


def test_statistics_for_every_model(triton):
    names = {s.name for s in triton.get_inference_statistics().model_stats}
    assert "penguins" in names


def test_repository_index_lists_the_shipped_models(triton):
    index = triton.get_model_repository_index().models
    assert ("penguins", "1", "READY") in {(m.name, m.version, m.state) for m in index}


@pytest.mark.parametrize("version", ["", "1"])
def test_versions_resolve(triton, version):
    features, _ = one_of_each()
    tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    result = triton.infer("penguins", [tensor], model_version=version)
    assert result.get_response().model_version == "1"

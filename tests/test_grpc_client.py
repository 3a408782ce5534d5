"""How `zooserve.Client` (and so `zooserve predict`) reads a response's outputs: with the
output decoders of zooserve.serving.grpc_frontend.tensors (a broken output is named as an output,
never as an input) and against the datatypes the model's metadata announced. In this
process: zooserve's generated modules live in a descriptor pool of their own, so importing
them beside tritonclient's (as other test modules do) is fine."""

from __future__ import annotations

import numpy as np
import pytest

from zooserve.client import ClientError, ModelInfo, TensorInfo, _prediction
from zooserve.protocol.generated import grpc_service_pb2 as pb

PENGUINS = ModelInfo(
    name="penguins", versions=["1"], platform="onnxruntime_onnx",
    inputs=[TensorInfo("features", "FP32", (-1, 4))],
    outputs=[TensorInfo("probabilities", "FP32", (-1, 3))],
    labels=["Adelie", "Chinstrap", "Gentoo"], feature_names=None, description="", task="",
)


def read_one_output(datatype: str, raw: bytes) -> str:
    response = pb.ModelInferResponse(model_name="penguins", model_version="1")
    response.outputs.add(name="probabilities", datatype=datatype, shape=[1, 3])
    response.raw_output_contents.append(raw)
    try:
        array = _prediction(PENGUINS, response).outputs["probabilities"]
    except ClientError as error:
        return f"refused {error.code} {error}"
    return f"decoded {array.dtype} {list(array.shape)}"


@pytest.mark.parametrize("datatype, raw, expected", [
    ("FP32", b"\0" * 12, "decoded float32 [1, 3]"),
    ("FP32", b"\0" * 8,
     "refused None the server's answer cannot be read: output 'probabilities': raw content "
     "has 8 bytes, but shape [1, 3] of FP32 needs 12 bytes (3 elements of 4)"),
    ("FP64", b"\0" * 24,
     "refused None the server's answer cannot be read: output 'probabilities': datatype FP64 "
     "in the response, the model's metadata says FP32"),
])  # fmt: skip
def test_outputs_are_read_as_outputs(datatype, raw, expected):
    assert read_one_output(datatype, raw) == expected


def test_typed_contents_are_read_too():
    response = pb.ModelInferResponse(model_name="penguins", model_version="1")
    tensor = response.outputs.add(name="probabilities", datatype="FP32", shape=[1, 3])
    tensor.contents.fp32_contents.extend([0.1, 0.7, 0.2])
    result = _prediction(PENGUINS, response)
    np.testing.assert_allclose(result.outputs["probabilities"], [[0.1, 0.7, 0.2]], rtol=1e-6)
    assert result.predicted() == ["Chinstrap"]

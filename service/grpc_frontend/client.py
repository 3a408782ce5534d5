"""A small gRPC client for `zooserve predict`: asks the server for the model's signature and
labels, sends the inputs as raw tensors, and reads the outputs back."""

from __future__ import annotations

import json
from dataclasses import dataclass

import grpc
import numpy as np

from service import codecs
from service.errors import ServingError
from service.grpc_frontend import tensors
from service.grpc_frontend.generated import grpc_service_pb2 as pb
from service.grpc_frontend.generated import grpc_service_pb2_grpc as pb_grpc
from service.labels import labelled_output


class PredictionError(Exception):
    """A prediction that could not be made; the message says why in one line."""


@dataclass
class Prediction:
    model: str
    version: str
    outputs: dict[str, np.ndarray]
    labels: list[str] | None

    def describe(self) -> str:
        lines = [f"model {self.model} version {self.version}"]
        found = labelled_output(self.labels, self.outputs) if self.labels else None
        for name, array in self.outputs.items():
            if found is not None and name == found[0]:
                for row in found[1]:
                    scores = ", ".join(f"{k}={p:.4f}" for k, p in row.probabilities.items())
                    lines.append(f"{row.label}  ({name}: {scores})")
            else:
                lines.append(f"{name} {list(array.shape)}: {np.array2string(array, precision=4)}")
        return "\n".join(lines)


def predict(
    url: str, model: str, values: object, version: str = "", timeout: float = 10.0
) -> Prediction:
    with grpc.insecure_channel(url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        try:
            metadata = stub.ModelMetadata(
                pb.ModelMetadataRequest(name=model, version=version), timeout=timeout
            )
            config = stub.ModelConfig(
                pb.ModelConfigRequest(name=model, version=version), timeout=timeout
            ).config
            request = _infer_request(metadata, model, version, values)
            response = stub.ModelInfer(request, timeout=timeout)
            outputs = _read_outputs(metadata, response)
        except grpc.RpcError as exc:
            raise PredictionError(f"{exc.code().name}: {exc.details()}") from None
        except ServingError as exc:
            raise PredictionError(exc.message) from None
    labels_json = config.parameters["labels"].string_value if "labels" in config.parameters else ""
    labels = json.loads(labels_json) if labels_json else None
    return Prediction(response.model_name, response.model_version, outputs, labels)


def _infer_request(
    metadata: pb.ModelMetadataResponse, model: str, version: str, values: object
) -> pb.ModelInferRequest:
    """Nested lists to raw tensors of the datatypes the model's metadata names."""
    if not isinstance(values, dict):
        if len(metadata.inputs) != 1:
            names = ", ".join(i.name for i in metadata.inputs)
            raise PredictionError(
                f"model '{model}' has several inputs ({names}); pass --inputs as a JSON "
                "object keyed by input name"
            )
        values = {metadata.inputs[0].name: values}
    by_name = {i.name: i for i in metadata.inputs}
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for name, nested in values.items():
        if name not in by_name:
            raise PredictionError(
                f"model '{model}' has no input '{name}'; its inputs are: " + ", ".join(by_name)
            )
        datatype = by_name[name].datatype
        array = codecs.decode_nested(name, datatype, nested)
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(codecs.encode_raw(array))
    return request


def _read_outputs(
    metadata: pb.ModelMetadataResponse, response: pb.ModelInferResponse
) -> dict[str, np.ndarray]:
    announced = {o.name: o.datatype for o in metadata.outputs}
    raw = list(response.raw_output_contents)
    outputs = {}
    for position, tensor in enumerate(response.outputs):
        expected = announced.get(tensor.name, tensor.datatype)
        buffer = raw[position] if position < len(raw) else None
        outputs[tensor.name] = tensors.decode_output(tensor, buffer, expected)
    return outputs

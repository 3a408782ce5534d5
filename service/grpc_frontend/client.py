"""A small gRPC client for `zooserve predict`: asks the server for the model's signature and
labels, sends the inputs as raw tensors, and reads the outputs back."""

from __future__ import annotations

import json
from dataclasses import dataclass

import grpc
import numpy as np

from service import codecs
from service.grpc_frontend.generated import grpc_service_pb2 as pb
from service.grpc_frontend.generated import grpc_service_pb2_grpc as pb_grpc


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
        for name, array in self.outputs.items():
            if self.labels and array.ndim == 2 and array.shape[1] == len(self.labels):
                for row in array:
                    best = int(np.argmax(row))
                    scores = ", ".join(
                        f"{label}={p:.4f}" for label, p in zip(self.labels, row, strict=True)
                    )
                    lines.append(f"{self.labels[best]}  ({name}: {scores})")
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
            request = pb.ModelInferRequest(model_name=model, model_version=version)
            given = values if isinstance(values, dict) else {metadata.inputs[0].name: values}
            if not isinstance(values, dict) and len(metadata.inputs) != 1:
                names = ", ".join(i.name for i in metadata.inputs)
                raise PredictionError(
                    f"model '{model}' has several inputs ({names}); pass --inputs as a JSON "
                    "object keyed by input name"
                )
            by_name = {i.name: i for i in metadata.inputs}
            for name, nested in given.items():
                datatype = by_name[name].datatype if name in by_name else "FP32"
                array = np.asarray(nested, dtype=codecs.numpy_dtype(name, datatype))
                request.inputs.add(name=name, datatype=datatype, shape=array.shape)
                request.raw_input_contents.append(codecs.encode_raw(array))
            response = stub.ModelInfer(request, timeout=timeout)
        except grpc.RpcError as exc:
            raise PredictionError(f"{exc.code().name}: {exc.details()}") from None
    outputs = {
        out.name: codecs.decode_raw(out.name, out.datatype, out.shape, raw)
        for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)
    }
    labels_json = config.parameters["labels"].string_value if "labels" in config.parameters else ""
    labels = json.loads(labels_json) if labels_json else None
    return Prediction(response.model_name, response.model_version, outputs, labels)

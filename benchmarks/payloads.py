"""The requests every system gets: one row per request of the two benchmark models, built once
and serialised once, so the load generators only send bytes.

penguins (overhead-bound): `features` FP32 [1, 4], a real row of raw measurements.
digits (compute-bound CNN): `image` FP32 [1, 28, 28, 1], fixed pseudo-random pixels 0-255."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

MODELS = ("penguins", "digits")


@dataclass(frozen=True)
class ModelLoad:
    model: str
    input_name: str
    output_name: str
    row_shape: tuple[int, ...]      # one row, without the batch axis
    output_width: int

    def batch(self, rows: int = 1) -> np.ndarray:
        if self.model == "penguins":
            row = np.asarray([39.1, 18.7, 181.0, 3750.0], dtype=np.float32)
            return np.tile(row, (rows, 1))
        rng = np.random.default_rng(0)
        return rng.integers(0, 256, size=(rows, *self.row_shape)).astype(np.float32)


LOADS = {
    "penguins": ModelLoad("penguins", "features", "probabilities", (4,), 3),
    "digits": ModelLoad("digits", "image", "probabilities", (28, 28, 1), 10),
}


def infer_request_bytes(model: str, typed: bool = False) -> bytes:
    """A serialised ModelInferRequest for one row: raw_input_contents (as tritonclient sends),
    or fp32_contents when typed (for a server that reads no raw contents)."""
    from zooserve.protocol.generated import grpc_service_pb2 as pb

    load = LOADS[model]
    array = load.batch(1)
    request = pb.ModelInferRequest(model_name=model)
    tensor = request.inputs.add(name=load.input_name, datatype="FP32", shape=list(array.shape))
    if typed:
        tensor.contents.fp32_contents.extend(array.ravel().tolist())
    else:
        request.raw_input_contents.append(array.tobytes())
    request.outputs.add(name=load.output_name)
    return request.SerializeToString()


def check_infer_response(model: str, data: bytes) -> None:
    """Raise ValueError unless data is a ModelInferResponse with the model's one output row."""
    from zooserve.protocol.generated import grpc_service_pb2 as pb

    load = LOADS[model]
    response = pb.ModelInferResponse.FromString(data)
    names = [o.name for o in response.outputs]
    if load.output_name not in names:
        raise ValueError(f"{model}: no output {load.output_name!r} in the response ({names})")
    output = response.outputs[names.index(load.output_name)]
    if list(output.shape) != [1, load.output_width]:
        raise ValueError(f"{model}: output shape {list(output.shape)}")
    if response.raw_output_contents:
        values = np.frombuffer(response.raw_output_contents[names.index(load.output_name)],
                               dtype=np.float32)
    else:
        values = np.asarray(output.contents.fp32_contents, dtype=np.float32)
    if values.size != load.output_width or not np.isclose(values.sum(), 1.0, atol=1e-3):
        raise ValueError(f"{model}: output is not a probability row: {values}")


def rest_body(model: str) -> bytes:
    """A KServe v2 REST inference request body (JSON) for one row."""
    load = LOADS[model]
    array = load.batch(1)
    return json.dumps({"inputs": [{"name": load.input_name, "datatype": "FP32",
                                   "shape": list(array.shape),
                                   "data": array.ravel().tolist()}],
                       "outputs": [{"name": load.output_name}]}).encode()


def check_rest_response(model: str, data: bytes) -> None:
    load = LOADS[model]
    body = json.loads(data)
    outputs = {o["name"]: o for o in body.get("outputs", [])}
    if load.output_name not in outputs:
        raise ValueError(f"{model}: no output {load.output_name!r} in {str(body)[:200]}")
    values = np.asarray(outputs[load.output_name]["data"], dtype=np.float32).ravel()
    if values.size != load.output_width:
        raise ValueError(f"{model}: output has {values.size} values")

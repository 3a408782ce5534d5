"""A prediction's request and answer, without I/O: the model's description read from its
metadata and config (`model_info`), the input (arrays, nested lists, DataFrames matched by
column name to the model's feature names, or a dict per input) as a ModelInfer request
(`infer_request`), and the response read back against the datatypes the metadata announced
(`prediction`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np

from zooserve.client.results import ClientError, ModelInfo, Prediction, TensorInfo
from zooserve.protocol import codecs
from zooserve.protocol import grpc_tensors as tensors
from zooserve.protocol.errors import ServingError
from zooserve.protocol.generated import grpc_service_pb2 as pb


def model_info(
    metadata: pb.ModelMetadataResponse, config: pb.ModelConfigResponse
) -> ModelInfo:
    parameters = config.config.parameters

    def parameter(key: str) -> str:
        return parameters[key].string_value if key in parameters else ""

    def json_list(key: str) -> list[str] | None:
        text = parameter(key)
        return [str(item) for item in json.loads(text)] if text else None

    def tensor_infos(specs) -> list[TensorInfo]:
        return [TensorInfo(s.name, s.datatype, tuple(s.shape)) for s in specs]

    return ModelInfo(
        name=metadata.name, versions=list(metadata.versions), platform=metadata.platform,
        inputs=tensor_infos(metadata.inputs), outputs=tensor_infos(metadata.outputs),
        labels=json_list("labels"), feature_names=json_list("feature_names"),
        description=parameter("description"), task=parameter("task"),
    )


def is_data_frame(value: object) -> bool:
    # A DataFrame can only exist once pandas is imported: no import here.
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def frame_values(info: ModelInfo, frame) -> np.ndarray:
    """A DataFrame's values, its columns put in the order of the model's feature names."""
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        raise ClientError(f"the DataFrame has repeated columns: {', '.join(repeated)}")
    names = info.feature_names
    if not names:  # the model names no features: the frame's own order
        return frame.to_numpy()
    missing = [n for n in names if n not in columns]
    extra = [c for c in columns if c not in names]
    if missing or extra:
        problems = []
        if missing:
            problems.append("missing columns " + ", ".join(missing))
        if extra:
            problems.append("columns the model does not take " + ", ".join(extra))
        raise ClientError(
            f"model '{info.name}': the DataFrame has {' and '.join(problems)}; its features "
            f"are {', '.join(names)}"
        )
    values = frame.to_numpy()
    if columns == names:
        return values
    # numpy's column take, not frame[names]: pandas' reindexing costs a millisecond a call
    return values[:, [columns.index(n) for n in names]]


def as_array(spec: TensorInfo, value: object) -> np.ndarray:
    """One input as an array of its datatype, every element checked
    (zooserve.protocol.codecs)."""
    try:
        return codecs.decode_nested(spec.name, spec.datatype, value)
    except ServingError as exc:
        raise ClientError(exc.message) from None
    except (ValueError, TypeError) as exc:  # numpy could not convert, e.g. text to FP32
        raise ClientError(
            f"input '{spec.name}': the values cannot be read as {spec.datatype}: {exc}"
        ) from None


def infer_request(
    info: ModelInfo, model: str, version: str, x: object
) -> tuple[pb.ModelInferRequest, Any]:
    """The ModelInfer request for `x`, and the index of `x` when it is a DataFrame."""
    index = None
    if isinstance(x, Mapping):
        values = dict(x)
        unknown = [str(n) for n in values if n not in info.input_names()]
        missing = [n for n in info.input_names() if n not in values]
        if unknown or missing:
            said = [f"no input {', '.join(unknown)}"] if unknown else []
            said += [f"missing {', '.join(missing)}"] if missing else []
            raise ClientError(
                f"model '{model}' {'; '.join(said)}: its inputs are {', '.join(info.input_names())}"
            )
    elif len(info.inputs) != 1:
        raise ClientError(
            f"model '{model}' has several inputs ({', '.join(info.input_names())}); pass a "
            "dict keyed by input name"
        )
    else:
        values = {info.inputs[0].name: x}
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for spec in info.inputs:
        value = values[spec.name]
        if is_data_frame(value):
            index = value.index
            value = frame_values(info, value)
        array = as_array(spec, value)
        request.inputs.add(name=spec.name, datatype=spec.datatype, shape=array.shape)
        request.raw_input_contents.append(codecs.encode_raw(array))
    return request, index


def prediction(
    info: ModelInfo, response: pb.ModelInferResponse, index: Any = None
) -> Prediction:
    """The response's outputs, read as outputs against the datatypes the metadata announced
    (zooserve.protocol.grpc_tensors)."""
    announced = {o.name: o.datatype for o in info.outputs}
    raw = response.raw_output_contents
    outputs = {}
    try:
        for position, tensor in enumerate(response.outputs):
            buffer = raw[position] if position < len(raw) else None
            expected = announced.get(tensor.name, tensor.datatype)
            outputs[tensor.name] = tensors.decode_output(tensor, buffer, expected)
    except ServingError as exc:
        raise ClientError(f"the server's answer cannot be read: {exc.message}") from None
    return Prediction(response.model_name, response.model_version, outputs, info.labels, index)

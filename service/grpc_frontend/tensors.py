"""Tensors inside gRPC messages, for the server's messages and the client alike: which typed
`contents` list carries each datatype, and one input or output tensor to numpy and back.
Element decoding and encoding is `service.codecs`."""

from __future__ import annotations

import numpy as np

from service import codecs
from service.errors import invalid_argument
from service.grpc_frontend.generated import grpc_service_pb2 as pb
from service.runtime import LoadedModel

# Which typed list of InferTensorContents carries each datatype (FP16 has none: raw only).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

Tensor = pb.ModelInferRequest.InferInputTensor | pb.ModelInferResponse.InferOutputTensor


def decode_input(
    model: LoadedModel, tensor: pb.ModelInferRequest.InferInputTensor, raw: bytes | None
) -> np.ndarray:
    """One request input, checked against the model's signature (name, declared datatype)
    before its elements are read from `raw` or from its typed contents."""
    spec = model.input_spec(tensor.name)
    model.check_datatype(spec, tensor.datatype)
    if raw is not None:
        if tensor.HasField("contents"):
            raise invalid_argument(
                f"input '{tensor.name}': send contents or raw_input_contents, not both"
            )
        return codecs.decode_raw(tensor.name, spec.datatype, tensor.shape, raw)
    values = typed_contents(tensor, codecs.INPUT)
    return codecs.decode_list(tensor.name, spec.datatype, tensor.shape, values)


def decode_output(
    tensor: pb.ModelInferResponse.InferOutputTensor, raw: bytes | None, expected: str
) -> np.ndarray:
    """One response output, as a client reads it: the datatype the model's metadata
    announced, elements from `raw` or from the typed contents."""
    if tensor.datatype != expected:
        raise invalid_argument(
            f"output '{tensor.name}': datatype {tensor.datatype} in the response, "
            f"the model's metadata says {expected}"
        )
    if raw is not None:
        return codecs.decode_raw(tensor.name, tensor.datatype, tensor.shape, raw, codecs.OUTPUT)
    values = typed_contents(tensor, codecs.OUTPUT)
    return codecs.decode_list(tensor.name, tensor.datatype, tensor.shape, values, codecs.OUTPUT)


def typed_contents(tensor: Tensor, role: str) -> list:
    """The elements of a tensor sent as a typed contents list."""
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise invalid_argument(
            f"{role} '{tensor.name}': {tensor.datatype} has no typed contents list; "
            f"send it in raw_{role}_contents"
        )
    if not tensor.HasField("contents"):
        raise invalid_argument(
            f"{role} '{tensor.name}' has no data: fill contents.{field} or raw_{role}_contents"
        )
    return list(getattr(tensor.contents, field))


"""One request input of a gRPC ModelInfer call, checked against the model's signature and
read to numpy (the wire forms are `zooserve.protocol.grpc_tensors`)."""

from __future__ import annotations

import numpy as np

from zooserve.protocol import codecs
from zooserve.protocol.errors import invalid_argument, quoted
from zooserve.protocol.generated import grpc_service_pb2 as pb
from zooserve.protocol.grpc_tensors import typed_contents
from zooserve.serving.loaded_model import LoadedModel


def decode_input(
    model: LoadedModel, tensor: pb.ModelInferRequest.InferInputTensor,
    raw: bytes | memoryview | None, cut: tuple[str, memoryview] | None = None,
) -> np.ndarray:
    """One request input, checked against the model's signature (name, declared datatype)
    before its elements are read from `raw` or from its typed contents (`cut`: the packed
    list cut out of the request's bytes, see messages.Cut)."""
    spec = model.input_spec(tensor.name)
    model.check_datatype(spec, tensor.datatype)
    if raw is not None:
        if tensor.HasField("contents"):
            raise invalid_argument(
                f"input {quoted(tensor.name)}: send contents or raw_input_contents, not both"
            )
        if isinstance(raw, memoryview) and spec.datatype == "BYTES":
            raw = raw.tobytes()  # its elements are cut into bytes objects
        return aligned(codecs.decode_raw(tensor.name, spec.datatype, tensor.shape, raw))
    values = typed_contents(tensor, codecs.INPUT, cut)
    return aligned(codecs.decode_list(tensor.name, spec.datatype, tensor.shape, values))


def aligned(array: np.ndarray) -> np.ndarray:
    """Elements read in place from a request's bytes may sit at any offset: such an array
    is copied (numpy lets go of the GIL for it) rather than handed to ONNX Runtime as is."""
    return array if array.flags.aligned else array.copy()

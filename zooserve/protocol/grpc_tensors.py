"""Tensors inside gRPC messages, for the server and the client alike: which typed `contents`
list carries each datatype, and one tensor's elements to numpy. Element decoding and encoding
is `zooserve.protocol.codecs`."""

from __future__ import annotations

import numpy as np

from zooserve.protocol import codecs
from zooserve.protocol.errors import invalid_argument, quoted
from zooserve.protocol.generated import grpc_service_pb2 as pb

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

# The element type each typed list carries on the wire.
WIRE_DTYPE: dict[str, np.dtype] = {
    "bool_contents": np.dtype(np.bool_),
    "int_contents": np.dtype("<i4"),
    "int64_contents": np.dtype("<i8"),
    "uint_contents": np.dtype("<u4"),
    "uint64_contents": np.dtype("<u8"),
    "fp32_contents": np.dtype("<f4"),
    "fp64_contents": np.dtype("<f8"),
    "bytes_contents": np.dtype(object),
}

Tensor = pb.ModelInferRequest.InferInputTensor | pb.ModelInferResponse.InferOutputTensor


def decode_output(
    tensor: pb.ModelInferResponse.InferOutputTensor, raw: bytes | None, expected: str
) -> np.ndarray:
    """One response output, as a client reads it: the datatype the model's metadata
    announced, elements from `raw` or from the typed contents."""
    if tensor.datatype != expected:
        raise invalid_argument(
            f"output {quoted(tensor.name)}: datatype {tensor.datatype} in the response, "
            f"the model's metadata says {expected}"
        )
    if raw is not None:
        return codecs.decode_raw(tensor.name, tensor.datatype, tensor.shape, raw, codecs.OUTPUT)
    values = typed_contents(tensor, codecs.OUTPUT)
    return codecs.decode_list(tensor.name, tensor.datatype, tensor.shape, values, codecs.OUTPUT)


def typed_contents(
    tensor: Tensor, role: str, cut: tuple[str, memoryview] | None = None
) -> np.ndarray:
    """The elements of a tensor sent as a typed contents list, as an array of the list's own
    wire type (int32 for int_contents, ...): `codecs` range-checks and casts it to the
    datatype. Decoded straight to numpy: a Python list of a large message would cost ten
    times its size (a boxed Python number per element). `cut`: the list's name and packed
    elements, when they were cut out of the message before it was parsed."""
    field = CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        raise invalid_argument(
            f"{role} {quoted(tensor.name)}: {tensor.datatype} has no typed contents "
            f"list; send it in raw_{role}_contents"
        )
    if not tensor.HasField("contents"):
        raise invalid_argument(
            f"{role} {quoted(tensor.name)} has no data: fill contents.{field} or "
            f"raw_{role}_contents"
        )
    if cut is not None:
        name, packed = cut
        dtype = WIRE_DTYPE[name]
        if name != field:
            raise invalid_argument(
                f"{role} {quoted(tensor.name)}: {tensor.datatype} elements go in "
                f"contents.{field}, but contents.{name} holds {len(packed) // dtype.itemsize}"
            )
        return np.frombuffer(packed, dtype=dtype)
    contents = tensor.contents
    for other, values in contents.ListFields():
        if other.name != field:
            raise invalid_argument(
                f"{role} {quoted(tensor.name)}: {tensor.datatype} elements go in "
                f"contents.{field}, but contents.{other.name} holds {len(values)}"
            )
    values = getattr(contents, field)
    dtype = WIRE_DTYPE[field]
    if field == "bytes_contents":
        return codecs.object_array(list(values), (len(values),))
    if dtype.kind == "f":
        packed = _packed_fixed_width(contents, field, dtype, len(values))
        if packed is not None:
            return packed
    return np.fromiter(values, dtype=dtype, count=len(values))


def _packed_fixed_width(
    contents: pb.InferTensorContents, field: str, dtype: np.dtype, count: int
) -> np.ndarray | None:
    """A float list read from its packed wire form: serialising the contents message gives
    the field's tag, its byte length and then the elements as little-endian IEEE numbers,
    which numpy reads in place. None when the bytes are not laid out so (then the caller
    iterates)."""
    if count == 0:
        return np.empty(0, dtype=dtype)
    wire = contents.SerializeToString()
    number = contents.DESCRIPTOR.fields_by_name[field].number
    if number > 15 or wire[0] != (number << 3 | 2):  # one-byte tag, length-delimited
        return None
    length, offset, shift = 0, 1, 0
    while offset < len(wire) and offset <= 10:
        byte = wire[offset]
        length |= (byte & 0x7F) << shift
        offset += 1
        shift += 7
        if not byte & 0x80:
            break
    if length != count * dtype.itemsize or offset + length > len(wire):
        return None
    return np.frombuffer(wire, dtype=dtype, count=count, offset=offset)

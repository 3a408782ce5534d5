"""Tensor element types by their Open Inference Protocol names (FP32, INT64, ...), the names
model cards and both frontends use, and their numpy and ONNX equivalents."""

from __future__ import annotations

import numpy as np

# protocol name -> numpy dtype (little-endian, as the protocol's raw buffers are)
NUMPY_BY_DATATYPE: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(object),
}

# ONNX Runtime's type strings (NodeArg.type) -> protocol name
DATATYPE_BY_ONNX: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}


# native-order numpy dtype -> protocol name, for reading a datatype off an array
_DATATYPE_BY_NUMPY: dict[np.dtype, str] = {
    dtype.newbyteorder("="): name
    for name, dtype in NUMPY_BY_DATATYPE.items()
    if dtype != np.dtype(object)
}


def datatype_of(array: np.ndarray) -> str:
    """The protocol name of an array's element type."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        return _DATATYPE_BY_NUMPY[array.dtype]
    except KeyError:
        raise ValueError(f"no protocol datatype for numpy dtype {array.dtype}") from None

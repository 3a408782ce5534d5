"""Protocol tensors to numpy arrays and back, for every frontend.

A protocol tensor is a name, a datatype name, a shape and its elements, either as one raw
little-endian row-major buffer (gRPC `raw_*_contents`) or as a flat or nested list (gRPC typed
`contents`, JSON `data`). Whatever does not add up is the client's mistake, reported as
INVALID_ARGUMENT naming the tensor, what was expected and what came."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from service.datatypes import NUMPY_BY_DATATYPE
from service.errors import invalid_argument


def check_shape(name: str, shape: Sequence[int]) -> tuple[int, ...]:
    dims = tuple(int(d) for d in shape)
    if any(d < 0 for d in dims):
        raise invalid_argument(
            f"input '{name}': shape {list(dims)} has a negative dimension; "
            "a request names the actual size of every axis"
        )
    return dims


def numpy_dtype(name: str, datatype: str) -> np.dtype:
    try:
        return NUMPY_BY_DATATYPE[datatype]
    except KeyError:
        known = ", ".join(NUMPY_BY_DATATYPE)
        raise invalid_argument(
            f"input '{name}': unknown datatype '{datatype}', expected one of {known}"
        ) from None


def decode_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> np.ndarray:
    """One raw buffer to an array of the given shape."""
    dims = check_shape(name, shape)
    dtype = numpy_dtype(name, datatype)
    count = math.prod(dims)
    if datatype == "BYTES":
        return _decode_raw_bytes(name, dims, count, raw)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise invalid_argument(
            f"input '{name}': raw content has {len(raw)} bytes, but shape {list(dims)} "
            f"of {datatype} needs {expected} bytes ({count} elements of {dtype.itemsize})"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


def _decode_raw_bytes(name: str, dims: tuple[int, ...], count: int, raw: bytes) -> np.ndarray:
    # BYTES elements travel as a 4-byte little-endian length followed by the bytes.
    items: list[bytes] = []
    offset = 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            break
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            break
        items.append(raw[offset : offset + length])
        offset += length
    if offset != len(raw) or len(items) != count:
        raise invalid_argument(
            f"input '{name}': raw BYTES content does not hold {count} length-prefixed "
            f"elements for shape {list(dims)}"
        )
    return np.array(items, dtype=object).reshape(dims)


def decode_list(name: str, datatype: str, shape: Sequence[int], values: Sequence) -> np.ndarray:
    """A flat or nested list of elements to an array of the given shape."""
    dims = check_shape(name, shape)
    dtype = numpy_dtype(name, datatype)
    try:
        flat = np.asarray(values, dtype=dtype).reshape(-1)
    except (ValueError, TypeError) as exc:
        raise invalid_argument(
            f"input '{name}': elements cannot be read as {datatype}: {exc}"
        ) from None
    count = math.prod(dims)
    if flat.size != count:
        raise invalid_argument(
            f"input '{name}': {flat.size} elements given, but shape {list(dims)} needs {count}"
        )
    return flat.reshape(dims)


def encode_raw(array: np.ndarray) -> bytes:
    """An array to one raw little-endian row-major buffer."""
    if array.dtype.kind in "OSU":
        parts = []
        for item in array.reshape(-1):
            data = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()

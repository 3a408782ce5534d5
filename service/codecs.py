"""Protocol tensors to numpy arrays and back, for every frontend and the client.

A protocol tensor is a name, a datatype name, a shape and its elements, carried one of three
ways; each has a decode/encode pair here:

- raw: one little-endian row-major buffer (gRPC `raw_input_contents`/`raw_output_contents`);
  BYTES elements as a 4-byte little-endian length and the bytes;
- flat list: the elements in row-major order, the shape given beside them (gRPC typed
  `contents`, KServe v2 JSON `data`);
- nested list: the shape is the nesting (the BentoML `predict` API's JSON).

Decoding trusts nothing: whatever does not add up is the client's mistake, INVALID_ARGUMENT
naming the tensor (`input 'features'`, or `output '...'` when a client reads a response),
what was expected and what came. JSON cannot hold bytes, so BYTES elements travel in JSON as
UTF-8 text: decoding accepts text or bytes, `encode_json` writes text."""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from service.datatypes import NUMPY_BY_DATATYPE
from service.errors import invalid_argument

INPUT = "input"
OUTPUT = "output"


def _who(name: str, role: str) -> str:
    return f"{role} '{name}'"


def check_shape(name: str, shape: Sequence[int], role: str = INPUT) -> tuple[int, ...]:
    dims = tuple(map(int, shape))
    if dims and min(dims) < 0:
        raise invalid_argument(
            f"{_who(name, role)}: shape {list(dims)} has a negative dimension; "
            "a request names the actual size of every axis"
        )
    return dims


def numpy_dtype(name: str, datatype: str, role: str = INPUT) -> np.dtype:
    try:
        return NUMPY_BY_DATATYPE[datatype]
    except KeyError:
        known = ", ".join(NUMPY_BY_DATATYPE)
        raise invalid_argument(
            f"{_who(name, role)}: unknown datatype '{datatype}', expected one of {known}"
        ) from None


# raw buffers


def decode_raw(
    name: str, datatype: str, shape: Sequence[int], raw: bytes, role: str = INPUT
) -> np.ndarray:
    """One raw buffer to an array of the given shape."""
    dims = check_shape(name, shape, role)
    dtype = numpy_dtype(name, datatype, role)
    count = math.prod(dims)
    if datatype == "BYTES":
        return _decode_raw_bytes(name, role, dims, count, raw)
    expected = count * dtype.itemsize
    if len(raw) != expected:
        raise invalid_argument(
            f"{_who(name, role)}: raw content has {len(raw)} bytes, but shape {list(dims)} "
            f"of {datatype} needs {expected} bytes ({count} elements of {dtype.itemsize})"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(dims)


def _decode_raw_bytes(
    name: str, role: str, dims: tuple[int, ...], count: int, raw: bytes
) -> np.ndarray:
    items: list[bytes] = []
    offset = 0
    while offset + 4 <= len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            break
        items.append(raw[offset : offset + length])
        offset += length
    if offset != len(raw) or len(items) != count:
        raise invalid_argument(
            f"{_who(name, role)}: raw BYTES content does not hold {count} length-prefixed "
            f"elements for shape {list(dims)}"
        )
    return object_array(items, dims)


def encode_raw(array: np.ndarray) -> bytes:
    """An array to one raw little-endian row-major buffer."""
    if array.dtype.kind in "OSU":
        return b"".join(
            struct.pack("<I", len(data)) + data for data in map(_as_bytes, array.reshape(-1))
        )
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()


# flat and nested lists


def decode_list(
    name: str, datatype: str, shape: Sequence[int], values: Sequence, role: str = INPUT
) -> np.ndarray:
    """A flat (or nested) list of elements to an array of the given shape."""
    dims = check_shape(name, shape, role)
    flat = _elements(name, datatype, values, role).reshape(-1)
    count = math.prod(dims)
    if flat.size != count:
        raise invalid_argument(
            f"{_who(name, role)}: {flat.size} elements given, "
            f"but shape {list(dims)} needs {count}"
        )
    return flat.reshape(dims)


def encode_list(array: np.ndarray) -> list:
    """An array to the flat list `decode_list` reads back (BYTES elements as bytes)."""
    if array.dtype.kind in "OSU":
        return [_as_bytes(item) for item in array.reshape(-1)]
    return array.reshape(-1).tolist()


def decode_nested(name: str, datatype: str, values: object, role: str = INPUT) -> np.ndarray:
    """A nested list to an array; its shape is the nesting."""
    return _elements(name, datatype, values, role)


def encode_json(array: np.ndarray, nested: bool = True) -> list:
    """An array as JSON-ready Python lists, nested by its shape or flat; BYTES as text."""
    if array.dtype.kind in "OSU":
        texts = [_as_text(item) for item in array.reshape(-1)]
        return object_array(texts, array.shape).tolist() if nested else texts
    return array.tolist() if nested else array.reshape(-1).tolist()


def _elements(name: str, datatype: str, values: object, role: str) -> np.ndarray:
    dtype = numpy_dtype(name, datatype, role)
    try:
        if datatype == "BYTES":
            return _bytes_array(values)
        return np.asarray(values, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise invalid_argument(
            f"{_who(name, role)}: elements cannot be read as {datatype}: {exc}"
        ) from None


def _bytes_array(values: object) -> np.ndarray:
    # np.asarray would read a list of equal-length strings as one fixed-width text array;
    # BYTES elements are each their own bytes object.
    nested = np.asarray(values, dtype=object)
    return object_array([_as_bytes(item) for item in nested.reshape(-1)], nested.shape)


def object_array(items: Sequence[object], shape: Sequence[int]) -> np.ndarray:
    """An object array of the given shape holding exactly these elements, row-major (numpy's
    own constructors would turn equal-length strings or sequences into extra axes)."""
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array.reshape(shape)


def _as_bytes(item: object) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, str):
        return item.encode("utf-8")
    raise TypeError(f"a BYTES element must be text or bytes, got {type(item).__name__}")


def _as_text(item: object) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)

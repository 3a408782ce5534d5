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
from collections.abc import Iterable, Sequence

import numpy as np

from zooserve.protocol.datatypes import NUMPY_BY_DATATYPE
from zooserve.protocol.errors import invalid_argument, quoted
from zooserve.protocol.limits import MAX_ELEMENTS, MAX_RANK

INPUT = "input"
OUTPUT = "output"


def _who(name: str, role: str) -> str:
    return f"{role} {quoted(name)}"


def check_shape(name: str, shape: Sequence[int], role: str = INPUT) -> tuple[int, ...]:
    """The shape as a tuple, within the limits (zooserve.protocol.limits): at most MAX_RANK axes,
    none negative, at most MAX_ELEMENTS elements. Checked before anything is sized from it."""
    if len(shape) > MAX_RANK:
        raise invalid_argument(
            f"{_who(name, role)}: shape has {len(shape)} axes, more than the limit of {MAX_RANK}"
        )
    dims = tuple(map(int, shape))
    if dims and min(dims) < 0:
        raise invalid_argument(
            f"{_who(name, role)}: shape {list(dims)} has a negative dimension; "
            "a request names the actual size of every axis"
        )
    if dims and (max(dims) > MAX_ELEMENTS or math.prod(dims) > MAX_ELEMENTS):
        raise invalid_argument(
            f"{_who(name, role)}: shape {list(dims)} has more elements than the limit of "
            f"{MAX_ELEMENTS} per tensor"
        )
    return dims


def numpy_dtype(name: str, datatype: str, role: str = INPUT) -> np.dtype:
    try:
        return NUMPY_BY_DATATYPE[datatype]
    except (KeyError, TypeError):
        known = ", ".join(NUMPY_BY_DATATYPE)
        raise invalid_argument(
            f"{_who(name, role)}: unknown datatype {quoted(datatype)}, expected one of {known}"
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
    # Each element costs at least its 4-byte prefix: a shape the buffer cannot hold is
    # refused before any element is made.
    items = _split_length_prefixed(raw, count) if count * 4 <= len(raw) else None
    if items is None:
        raise invalid_argument(
            f"{_who(name, role)}: raw BYTES content ({len(raw)} bytes) does not hold {count} "
            f"length-prefixed elements for shape {list(dims)}"
        )
    return object_array(items, dims)


def _split_length_prefixed(raw: bytes, count: int) -> list[bytes] | None:
    """Exactly `count` elements, each a 4-byte little-endian length and its bytes, filling
    `raw`; None when they do not. Equal-length elements (fixed-width text, the common case)
    are cut without reading each prefix in Python."""
    size = len(raw)
    (first,) = struct.unpack_from("<I", raw, 0) if count else (0,)
    stride = 4 + first
    if count and stride * count == size:
        prefixes = np.ndarray((count,), dtype="<u4", buffer=raw, strides=(stride,))
        if bool((prefixes == first).all()):
            starts = range(4, 4 + count * stride, stride)
            return [raw[start : start + first] for start in starts]
    unpack = struct.Struct("<I").unpack_from
    items: list[bytes] = []
    append = items.append
    offset = 0
    for _ in range(count):
        if offset + 4 > size:
            return None
        (length,) = unpack(raw, offset)
        offset += 4
        end = offset + length
        if end > size:
            return None
        append(raw[offset:end])
        offset = end
    return items if offset == size else None


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


# JSON has no NaN or infinities: the float elements that are not finite travel as these
# strings, which JSON parsers keep and numpy (tritonclient's `as_numpy`) reads back as floats.
NON_FINITE_TEXT = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_json(array: np.ndarray, nested: bool = True) -> list:
    """An array as JSON-ready Python lists, nested by its shape or flat; BYTES as text;
    float elements that are not finite as "NaN", "Infinity" or "-Infinity" (strict JSON, as
    the HTTP responses are written)."""
    if array.dtype.kind in "OSU":
        texts = [_as_text(item) for item in array.reshape(-1)]
        return object_array(texts, array.shape).tolist() if nested else texts
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        words = np.where(np.isnan(array), "NaN", np.where(array > 0, "Infinity", "-Infinity"))
        mixed = array.astype(object)
        mixed[~np.isfinite(array)] = words[~np.isfinite(array)]
        array = mixed
    return array.tolist() if nested else array.reshape(-1).tolist()


# What a JSON (or Python) element may be, per kind of datatype: JSON's booleans are not
# numbers, integer datatypes take integers only, and BYTES takes text (or bytes).
_BOOL_TYPES = frozenset({bool})
_INT_TYPES = frozenset({int})
_FLOAT_TYPES = frozenset({int, float})
_BYTES_TYPES = frozenset({str, bytes})
_WORDS = {"b": "true or false", "i": "integers", "u": "integers",
          "f": 'numbers ("NaN", "Infinity" and "-Infinity" for the others)', "O": "text"}


class ElementSource:
    """Elements not yet made into Python objects (a large JSON array left in its body:
    zooserve/serving/http_frontend/json_tensors.py); `elements` reads them as `_elements` reads a
    list, with the same checks and messages."""

    def elements(self, name: str, datatype: str, role: str) -> np.ndarray:
        raise NotImplementedError


def _elements(name: str, datatype: str, values: object, role: str) -> np.ndarray:
    """The elements as an array of the datatype, each checked: an array (gRPC's typed
    contents, already numbers of the wire's type) is range-checked and cast; Python values
    (JSON) are checked by type, nesting and range first."""
    dtype = numpy_dtype(name, datatype, role)
    if isinstance(values, ElementSource):
        return values.elements(name, datatype, role)
    if isinstance(values, np.ndarray) and values.dtype != object:
        return _cast_in_range(name, role, datatype, dtype, values)
    try:
        nested = np.asarray(values, dtype=object)
    except (ValueError, RuntimeError, TypeError):  # numpy's own limit on nesting
        raise invalid_argument(
            f"{_who(name, role)}: elements cannot be read as {datatype}: nested more than "
            f"{MAX_RANK} deep, or ragged"
        ) from None
    if nested.ndim > MAX_RANK:
        raise invalid_argument(
            f"{_who(name, role)}: elements nested {nested.ndim} deep, more than the limit of "
            f"{MAX_RANK} axes"
        )
    if nested.size > MAX_ELEMENTS:
        raise invalid_argument(
            f"{_who(name, role)}: {nested.size} elements, more than the limit of "
            f"{MAX_ELEMENTS} per tensor"
        )
    flat = nested.reshape(-1)
    allowed = {"b": _BOOL_TYPES, "i": _INT_TYPES, "u": _INT_TYPES, "f": _FLOAT_TYPES,
               "O": _BYTES_TYPES}[dtype.kind]
    if dtype.kind == "f" and str in set(map(type, flat)):  # "NaN", as encode_json writes it
        flat = np.array([NON_FINITE_TEXT.get(v, v) if type(v) is str else v for v in flat],
                        dtype=object)
    if not set(map(type, flat)) <= allowed:
        index, item = next((i, v) for i, v in enumerate(flat) if type(v) not in allowed)
        raise invalid_argument(
            f"{_who(name, role)}: elements cannot be read as {datatype}: element {index} is "
            f"{_describe(item)}; {datatype} elements are {_WORDS[dtype.kind]}"
        )
    if dtype.kind == "O":
        return object_array([_as_bytes(item) for item in flat], nested.shape)
    if dtype.kind == "b":
        return flat.astype(dtype).reshape(nested.shape)
    if dtype.kind in "iu":
        return _ints_in_range(name, role, datatype, dtype, flat).reshape(nested.shape)
    try:
        wide = flat.astype(np.float64)
    except OverflowError:  # an integer beyond any float
        index = next(i for i, v in enumerate(flat) if type(v) is int and v.bit_length() > 1000)
        raise _out_of_range(name, role, datatype, index, flat[index]) from None
    return _cast_in_range(name, role, datatype, dtype, wide).reshape(nested.shape)


def elements_from_pieces(
    name: str, datatype: str, role: str, dims: tuple[int, ...] | None, depth: int,
    pieces: Iterable[list],
) -> np.ndarray:
    """What `_elements` makes of a nested list of shape `dims` (None: ragged), given as its
    elements in row-major pieces: each piece is checked and converted into the result before
    the next is read, so no more than one piece is ever Python objects. The same mistakes
    are refused with the same messages, in the same order (nesting, size, the first element
    of a wrong type, then the first out of range)."""
    dtype = numpy_dtype(name, datatype, role)
    who = _who(name, role)
    if dims is None or depth > 64:  # numpy's own limit on dimensions
        raise invalid_argument(
            f"{who}: elements cannot be read as {datatype}: nested more than {MAX_RANK} deep, "
            "or ragged")
    if len(dims) > MAX_RANK:
        raise invalid_argument(
            f"{who}: elements nested {len(dims)} deep, more than the limit of {MAX_RANK} axes")
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        raise invalid_argument(
            f"{who}: {count} elements, more than the limit of {MAX_ELEMENTS} per tensor")
    kind = dtype.kind
    allowed = {"b": _BOOL_TYPES, "i": _INT_TYPES, "u": _INT_TYPES, "f": _FLOAT_TYPES,
               "O": _BYTES_TYPES}[kind]
    texts: list[bytes] = []
    out = np.empty(0 if kind == "O" else count, dtype=dtype)
    filled = 0
    out_of_range: Exception | None = None
    overflow, big = False, None  # an integer beyond any float, and which one
    for values in pieces:
        types = set(map(type, values))
        if kind == "f" and str in types:
            values = [NON_FINITE_TEXT.get(v, v) if type(v) is str else v for v in values]
            types = set(map(type, values))
        if not types <= allowed:
            index, item = next((i, v) for i, v in enumerate(values) if type(v) not in allowed)
            raise invalid_argument(
                f"{who}: elements cannot be read as {datatype}: element {filled + index} is "
                f"{_describe(item)}; {datatype} elements are {_WORDS[kind]}")
        size = len(values)
        part = out[filled:filled + size]
        if kind == "O":
            texts.extend(map(_as_bytes, values))
        elif kind == "b":
            part[:] = values
        elif kind in "iu":
            info = np.iinfo(dtype)
            if size and (min(values) < info.min or max(values) > info.max):
                if out_of_range is None:
                    index = next(i for i, v in enumerate(values)
                                 if not info.min <= v <= info.max)
                    out_of_range = _out_of_range(name, role, datatype, filled + index,
                                                 values[index])
            else:
                part[:] = values
        else:
            try:
                wide = np.array(values, dtype=np.float64)
            except OverflowError:
                overflow = True
                if big is None:
                    index = next(i for i, v in enumerate(values)
                                 if type(v) is int and v.bit_length() > 1000)
                    big = (filled + index, values[index])
            else:
                with np.errstate(over="ignore", invalid="ignore"):
                    part[:] = wide
                if out_of_range is None and dtype != wide.dtype:
                    wrong = np.flatnonzero(np.isinf(part) & np.isfinite(wide))
                    if wrong.size:
                        index = int(wrong[0])
                        out_of_range = _out_of_range(name, role, datatype, filled + index,
                                                     wide[index])
        filled += size
    if overflow and big is not None:  # as flat.astype(np.float64) fails in _elements
        raise _out_of_range(name, role, datatype, *big)
    if out_of_range is not None:
        raise out_of_range
    if kind == "O":
        return object_array(texts, dims)
    return out.reshape(dims)


def _ints_in_range(
    name: str, role: str, datatype: str, dtype: np.dtype, flat: np.ndarray
) -> np.ndarray:
    """Python ints (an object array) as the integer dtype, refused if any does not fit."""
    if flat.size:
        info = np.iinfo(dtype)
        low, high = min(flat), max(flat)
        if low < info.min or high > info.max:
            index = next(i for i, v in enumerate(flat) if not info.min <= v <= info.max)
            raise _out_of_range(name, role, datatype, index, flat[index])
    return flat.astype(dtype)


def _cast_in_range(
    name: str, role: str, datatype: str, dtype: np.dtype, array: np.ndarray
) -> np.ndarray:
    """Numbers as the datatype's dtype, refused where one does not fit: integers out of the
    datatype's range, finite floats that would become infinite. NaN and infinities of a
    float datatype are values like any other."""
    if array.dtype == dtype:
        return array
    if array.dtype.kind == "b" or dtype.kind == "b":
        if array.dtype.kind != dtype.kind:
            raise invalid_argument(
                f"{_who(name, role)}: {array.dtype} elements given for {datatype}"
            )
        return array.astype(dtype)
    if dtype.kind in "iu":
        if array.dtype.kind not in "iu":
            raise invalid_argument(
                f"{_who(name, role)}: {array.dtype} elements given; {datatype} elements are "
                "integers"
            )
        info = np.iinfo(dtype)
        if array.size and (int(array.min()) < info.min or int(array.max()) > info.max):
            index = next(i for i, v in enumerate(array.reshape(-1).tolist())
                         if not info.min <= v <= info.max)
            raise _out_of_range(name, role, datatype, index, array.reshape(-1)[index])
        return array.astype(dtype)
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(dtype)
    if dtype.kind == "f" and cast.size:
        overflowed = np.isinf(cast) & np.isfinite(array)
        if overflowed.any():
            index = int(np.flatnonzero(overflowed.reshape(-1))[0])
            raise _out_of_range(name, role, datatype, index, array.reshape(-1)[index])
    return cast


def _out_of_range(name: str, role: str, datatype: str, index: int, value: object):
    return invalid_argument(
        f"{_who(name, role)}: element {index} ({_number(value)}) is out of the range of "
        f"{datatype}"
    )


def _number(value: object) -> str:
    if isinstance(value, int) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    return str(value)


def _describe(item: object) -> str:
    if item is None:
        return "null"
    if isinstance(item, bool):
        return "a boolean"
    if isinstance(item, list):
        return "a list (the nesting is ragged or deeper than the elements)"
    if isinstance(item, (str, bytes)):
        return f"the text {quoted(item, 20)}"
    if isinstance(item, (int, float)):
        return f"the number {_number(item)}"
    return f"{type(item).__name__} {quoted(repr(item), 20)}"


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

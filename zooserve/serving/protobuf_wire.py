"""Protobuf's wire format, walked by hand where parsing the whole message would cost too
much (a large ModelInfer request's tensor data, grpc_frontend/messages.py) or would need a
package the serving install lacks (an ONNX file's external data, onnx_files.py).

Only the framing is read: each field's number, wire type and extent. Malformed bytes raise
WireError, a ValueError."""

from __future__ import annotations

from collections.abc import Iterator

VARINT, FIXED64, LENGTH_DELIMITED, START_GROUP, END_GROUP, FIXED32 = 0, 1, 2, 3, 4, 5
_MAX_GROUP_DEPTH = 64  # groups in groups: deeper than any real message, shallower than a stack


class WireError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


def varint(data: memoryview | bytes, position: int) -> tuple[int, int]:
    """The varint at `position`, and where the next thing starts."""
    result = shift = 0
    while True:
        if position >= len(data) or shift > 63:
            raise WireError("a number is cut off or too long")
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7


def encode_varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def fields(data: memoryview, start: int = 0, end: int | None = None
           ) -> Iterator[tuple[int, int, int, int, int]]:
    """(number, wire type, where the field starts, where its value starts, where it ends)
    for each field of the message between `start` and `end`. A length-delimited value is
    its bytes without their length; a group's runs to its end tag."""
    end = len(data) if end is None else end
    position = start
    while position < end:
        key, value_start = varint(data, position)
        number, wire = key >> 3, key & 7
        if wire == LENGTH_DELIMITED:
            length, value_start = varint(data, value_start)
            value_end = value_start + length
        else:
            value_end = _skip(data, value_start, number, wire, 0)
        if number == 0 or value_end > end:
            raise WireError("a field is cut off, or numbered 0")
        yield number, wire, position, value_start, value_end
        position = value_end


def length_delimited(data: memoryview) -> Iterator[tuple[int, memoryview]]:
    """(field number, bytes) of each length-delimited field of one message."""
    for number, wire, _, value_start, value_end in fields(data):
        if wire == LENGTH_DELIMITED:
            yield number, data[value_start:value_end]


def _skip(data: memoryview, position: int, number: int, wire: int, depth: int) -> int:
    """Where a field of any wire type but length-delimited ends."""
    if wire == VARINT:
        return varint(data, position)[1]
    if wire == FIXED64:
        return position + 8
    if wire == FIXED32:
        return position + 4
    if wire != START_GROUP:  # a group's end tag is not a field of its own
        raise WireError(f"wire type {wire} where a field starts")
    if depth > _MAX_GROUP_DEPTH:
        raise WireError("groups nested too deeply")
    while True:  # a group is not in onnx.proto or the KServe protocol, but protobuf skips one
        key, position = varint(data, position)
        inner, inner_wire = key >> 3, key & 7
        if inner_wire == END_GROUP:
            if inner != number:
                raise WireError("a group ends with another group's number")
            return position
        if inner_wire == LENGTH_DELIMITED:
            length, position = varint(data, position)
            position += length
        else:
            position = _skip(data, position, inner, inner_wire, depth + 1)
        if position > len(data):
            raise WireError("a group runs past the end of its message")

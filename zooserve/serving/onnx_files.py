"""The files an ONNX model file makes ONNX Runtime open besides itself: the `location` of
every tensor kept as external data (`onnx.save_model(..., save_as_external_data=True)`).

Read from the protobuf wire format directly (zooserve/serving/protobuf_wire.py), so the serving
install needs no `onnx` package: only the messages that can hold a tensor are walked (the
graph and its nodes' attributes, subgraphs, functions, training graphs), everything else is
skipped by its length. Field numbers are onnx.proto's."""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from pathlib import Path

from zooserve.serving.protobuf_wire import WireError, length_delimited

# onnx.proto field numbers of the messages walked.
_MODEL = {7: "graph", 20: "training_info", 25: "function"}
_TRAINING_INFO = {1: "graph", 2: "graph"}
_GRAPH = {1: "node", 5: "tensor", 15: "sparse_tensor"}
_FUNCTION = {7: "node"}
_NODE = {5: "attribute"}
_ATTRIBUTE = {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse_tensor",
              23: "sparse_tensor"}
_SPARSE_TENSOR = {1: "tensor", 2: "tensor"}
_TENSOR_EXTERNAL_DATA = 13  # repeated StringStringEntryProto: key 1, value 2
_MAX_DEPTH = 64  # subgraphs in subgraphs: deeper than any real model, shallower than a stack


class NotOnnx(ValueError):
    """The file is not a well-formed protobuf message."""


def external_data_locations(model_file: Path) -> list[str]:
    """Every distinct external-data `location` the model names, in the order first found,
    as written in the file (relative to the model's folder, unchecked)."""
    with open(model_file, "rb") as stream:
        if stream.seek(0, 2) == 0:
            return []
        with mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            view = memoryview(mapped)
            try:
                found = dict.fromkeys(_locations(view, _MODEL, 0))
            except WireError as exc:
                raise NotOnnx(str(exc)) from None
            finally:
                view.release()
    return list(found)


def _locations(data: memoryview, fields: dict[int, str], depth: int) -> Iterator[str]:
    if depth > _MAX_DEPTH:
        raise NotOnnx("messages nested too deeply")
    for number, value in length_delimited(data):
        kind = fields.get(number)
        if kind is None:
            continue
        if kind == "tensor":
            yield from _tensor_locations(value)
        else:
            yield from _locations(value, _MESSAGES[kind], depth + 1)


def _tensor_locations(tensor: memoryview) -> Iterator[str]:
    for number, entry in length_delimited(tensor):
        if number != _TENSOR_EXTERNAL_DATA:
            continue
        pair = dict(length_delimited(entry))
        if bytes(pair.get(1, b"")) == b"location":
            try:
                yield bytes(pair.get(2, b"")).decode("utf-8")
            except UnicodeDecodeError:
                raise NotOnnx("an external-data location is not UTF-8 text") from None


_MESSAGES = {"graph": _GRAPH, "training_info": _TRAINING_INFO, "function": _FUNCTION,
             "node": _NODE, "attribute": _ATTRIBUTE, "sparse_tensor": _SPARSE_TENSOR}

"""A model repository for the hostile-client tests (corpus, fuzz): penguins and
spectra_similarity as shipped, and one tiny Identity model per protocol datatype
(`echo_int8`, ..., input `value`, output `same`, shape [-1, 2]), so every datatype's range
checks meet a real server."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.helpers.paths import MODELS

# protocol datatype -> onnx TensorProto name
ECHO_TYPES = {
    "BOOL": "BOOL", "INT8": "INT8", "INT16": "INT16", "INT32": "INT32", "INT64": "INT64",
    "UINT8": "UINT8", "UINT16": "UINT16", "UINT32": "UINT32", "UINT64": "UINT64",
    "FP16": "FLOAT16", "FP32": "FLOAT", "FP64": "DOUBLE", "BYTES": "STRING",
}


def build_identity_model(repository: Path, name: str, onnx_type: int) -> None:
    """`<repository>/<name>/1/`: an Identity graph, input `value` and output `same`, both
    [-1, 2] of `onnx_type`."""
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["value"], ["same"])],
        name,
        [helper.make_tensor_value_info("value", onnx_type, ["batch", 2])],
        [helper.make_tensor_value_info("same", onnx_type, ["batch", 2])],
    )
    save_version_1(repository, name, graph)


def save_version_1(repository: Path, name: str, graph) -> Path:
    """`graph` as `<repository>/<name>/1/model.onnx` (opset 17, IR 9, checked): the version
    folder."""
    import onnx
    from onnx import helper

    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    folder = repository / name / "1"
    folder.mkdir(parents=True)
    onnx.save(model, folder / "model.onnx")
    return folder


def echo_model(datatype: str) -> str:
    return f"echo_{datatype.lower()}"


def build_echo_repository(root: Path) -> Path:
    from onnx import TensorProto

    for name in ("penguins", "spectra_similarity"):
        shutil.copytree(MODELS / name, root / name)
    for datatype, onnx_name in ECHO_TYPES.items():
        build_identity_model(root, echo_model(datatype), getattr(TensorProto, onnx_name))
    return root

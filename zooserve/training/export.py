"""Keras -> ONNX, checked: stable tensor names, labels in the metadata, parity, the card.

The conversion goes through tf2onnx (the same path `model.export(format="onnx")` takes)
with a `tf.function` whose input specs and output keys carry the served tensor names, and a
batch axis left dynamic. Two fixes are applied to the ONNX graph afterwards:

* constants that Keras holds as plain tensors rather than variables (a Normalization
  layer's mean and variance) reach tf2onnx as captured inputs and would become extra graph
  inputs; they are folded back in as initializers;
* the symbolic batch dimension is named `batch`.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from zooserve.repository.layout import MODEL_FILE, sha256_of_file
from zooserve.training.data.dataset import Arrays

OPSET = 17
PARITY_TOLERANCE = 1e-5


class ParityError(RuntimeError):
    """The ONNX model does not compute what the Keras model computes."""


# Where the ops tf2onnx most often meets and cannot convert come from, in the user's words.
_OP_ORIGIN = {
    "PyFunc": ", a tf.numpy_function",
    "PyFuncStateless": ", a tf.numpy_function",
    "EagerPyFunc": ", a tf.py_function",
}


class ConversionError(RuntimeError):
    """tf2onnx left TensorFlow ops in the graph that ONNX has no operator for (a
    `tf.numpy_function` or `tf.py_function`, a custom op): `ops` maps each op type to the
    graph node (named after the Keras layer) where it occurs."""

    def __init__(self, ops: dict[str, str]) -> None:
        self.ops = ops
        found = ", ".join(f"{op}{_OP_ORIGIN.get(op, '')} (in {node})" for op, node in ops.items())
        super().__init__(f"the ONNX converter cannot handle TensorFlow op {found}")


def _tensor_spec(shape, name: str):
    import tensorflow as tf

    return tf.TensorSpec([None, *shape[1:]], tf.float32, name=name)


def convert(
    model, input_names: list[str], output_name: str, labels: list[str] | None,
    metadata: dict[str, str] | None = None,
):
    """The Keras model as an ONNX ModelProto with the given input and output names; `labels`
    and `metadata` (key -> text) go into its metadata."""
    import onnx
    import tensorflow as tf
    import tf2onnx
    from keras.src.export.onnx import patch_tf2onnx

    specs = [
        _tensor_spec(tensor.shape, name)
        for tensor, name in zip(model.inputs, input_names, strict=True)
    ]

    @tf.function(input_signature=specs)
    def serve(*tensors):
        inputs = list(tensors) if len(tensors) > 1 else tensors[0]
        return {output_name: model(inputs, training=False)}

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        patch_tf2onnx()  # tf2onnx 1.17 still looks for np.object etc. removed in NumPy 2
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=specs, opset=OPSET)
    _refuse_unsupported_ops(proto)
    _fold_captured_constants(proto, serve.get_concrete_function(), len(specs))
    _name_batch_axis(proto)
    _check_names(proto, input_names, output_name)
    if labels is not None:
        entry = proto.metadata_props.add()
        entry.key, entry.value = "labels", json.dumps(labels)
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.producer_name = "zooserve training (tf2onnx)"
    onnx.checker.check_model(proto, full_check=True)
    return proto


def _refuse_unsupported_ops(proto) -> None:
    """tf2onnx only logs the ops it cannot convert and copies them in as they are."""
    import onnx

    unsupported: dict[str, str] = {}
    for node in proto.graph.node:
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            unsupported.setdefault(node.op_type, node.name)
    if unsupported:
        raise ConversionError(unsupported)


def _fold_captured_constants(proto, concrete, user_inputs: int) -> None:
    """Turn graph inputs that are captured constant tensors into initializers."""
    import onnx
    import tensorflow as tf

    constants = {
        placeholder.name: np.asarray(value)
        for placeholder, value in zip(
            concrete.inputs[user_inputs:], concrete.captured_inputs, strict=True
        )
        if placeholder.dtype != tf.resource
    }
    used = {name for node in proto.graph.node for name in node.input}
    kept = []
    for graph_input in proto.graph.input:
        if graph_input.name in constants and graph_input.name not in used:
            continue  # folded away by tf2onnx's optimiser: drop it
        if graph_input.name in constants:
            array = constants[graph_input.name]
            proto.graph.initializer.append(onnx.numpy_helper.from_array(array, graph_input.name))
        else:
            kept.append(graph_input)
    del proto.graph.input[:]
    proto.graph.input.extend(kept)


def _name_batch_axis(proto) -> None:
    for value in [*proto.graph.input, *proto.graph.output]:
        first = value.type.tensor_type.shape.dim[0]
        if not first.HasField("dim_value"):
            first.dim_param = "batch"


def _check_names(proto, input_names: list[str], output_name: str) -> None:
    found_inputs = [i.name for i in proto.graph.input]
    found_outputs = [o.name for o in proto.graph.output]
    if found_inputs != input_names or found_outputs != [output_name]:
        raise RuntimeError(
            f"exported tensor names {found_inputs} -> {found_outputs}, "
            f"expected {input_names} -> {[output_name]}"
        )


def save(proto, path: Path) -> str:
    """Write the ONNX file; returns its sha256."""
    path.write_bytes(proto.SerializeToString())
    return sha256_of_file(path)


def run_onnx(path: Path, input_names: list[str], x: Arrays) -> np.ndarray:
    """Run the exported file with ONNX Runtime on CPU, in one batch."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    arrays = x if isinstance(x, tuple) else (x,)
    pairs = zip(input_names, arrays, strict=True)
    feeds = {name: np.asarray(a, dtype=np.float32) for name, a in pairs}
    return session.run(None, feeds)[0]


def check_parity(
    expected: np.ndarray, path: Path, input_names: list[str], x: Arrays,
    tolerance: float = PARITY_TOLERANCE, compared_on: str = "the test set",
) -> float:  # fmt: skip
    """Max abs difference between Keras outputs and ONNX Runtime's on the same inputs.

    Raises ParityError when it exceeds `tolerance`: a model that answers differently from
    the one that was measured must never be shipped. `compared_on` says what `x` is.
    """
    actual = run_onnx(path, input_names, x)
    if actual.shape != expected.shape:
        raise ParityError(f"{path}: ONNX output shape {actual.shape}, Keras {expected.shape}")
    gaps = np.abs(actual - expected)
    difference = float(np.max(gaps)) if expected.size else 0.0
    if not difference <= tolerance:  # NaN fails too
        worst = np.unravel_index(int(np.argmax(np.nan_to_num(gaps, nan=np.inf))), gaps.shape)
        raise ParityError(
            f"{path}: ONNX and Keras outputs differ by up to {difference:.3g} on {compared_on} "
            f"(worst at output{list(map(int, worst))}: Keras {float(expected[worst]):.6g}, "
            f"ONNX {float(actual[worst]):.6g}; allowed {tolerance:g}); the export is wrong, "
            "refusing to ship it"
        )
    return difference


def card_section(sha256: str, difference: float) -> dict[str, object]:
    """The card's `onnx` entry: the file, its hash and opset, and the parity measured. (The
    card's `files`, zooserve.repository.layout.file_hashes, records every file of the version
    folder, this one included, once they are all written.)"""
    return {
        "file": MODEL_FILE,
        "sha256": sha256,
        "opset": OPSET,
        "parity_max_abs_diff": float(f"{difference:.3g}"),
    }


def tensor_entries(proto, descriptions: dict[str, str]) -> tuple[list[dict], list[dict]]:
    """The card's `inputs` and `outputs`, read back from the ONNX graph itself."""

    def entry(value) -> dict:
        dims = value.type.tensor_type.shape.dim
        return {
            "name": value.name,
            "datatype": "FP32",
            "shape": [d.dim_value if d.HasField("dim_value") else -1 for d in dims],
            "description": descriptions.get(value.name, ""),
        }

    return [entry(v) for v in proto.graph.input], [entry(v) for v in proto.graph.output]

"""What a user hands `zooserve export`: a Keras model trained elsewhere (`.keras`, legacy
`.h5`, or a TensorFlow SavedModel folder), the Python file defining its custom layers, and a
test file to measure it on. Each mistake in them is a `UserModelError` with one line that
says what is wrong and what to do.

TensorFlow and Keras are imported inside the functions that need them.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import inspect
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zooserve.repository.layout import sha256_of_file
from zooserve.training.data.dataset import Arrays

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
SUFFIX_OF = {"keras": ".keras", "h5": ".h5"}
SERVING_SIGNATURE = "serving_default"

# Names the served tensors may have: an identifier, which every TensorFlow, ONNX and
# protocol path accepts.
_TENSOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


class UserModelError(ValueError):
    """A mistake in what the user gave (exit status 2), in one line."""


@dataclass(frozen=True)
class SourceModel:
    """The user's model on disk, before loading."""

    path: Path
    format: str  # keras, h5 or saved_model
    sha256: str


@dataclass(frozen=True)
class TestData:
    """Rows to measure the model on: inputs in model order, targets as given."""

    x: Arrays
    y: np.ndarray
    rows: int
    sha256: str
    file: str


# -- the model file -------------------------------------------------------------------------


def model_format(path: Path) -> str:
    """keras, h5 or saved_model: from what `path` holds, not from its name."""
    if not path.exists():
        raise UserModelError(f"{path} does not exist")
    if path.is_dir():
        if not any((path / name).is_file() for name in ("saved_model.pb", "saved_model.pbtxt")):
            raise UserModelError(
                f"{path} is a folder but not a TensorFlow SavedModel (no saved_model.pb in it)"
            )
        return "saved_model"
    with open(path, "rb") as stream:
        head = stream.read(8)
    if head.startswith(ZIP_MAGIC):
        return "keras"
    if head == HDF5_MAGIC:
        return "h5"
    raise UserModelError(
        f"{path} is not a Keras model: expected a .keras file (a zip archive), a legacy "
        ".h5 file (HDF5) or a SavedModel folder"
    )


def identify(path: Path) -> SourceModel:
    """The format of `path` and its sha256 (over all its files, for a SavedModel folder)."""
    found = model_format(path)
    sha256 = folder_sha256(path) if found == "saved_model" else sha256_of_file(path)
    return SourceModel(path, found, sha256)


def folder_sha256(folder: Path) -> str:
    """One sha256 over a folder's files in sorted path order: each file's relative path,
    then its own sha256, so a renamed or moved file changes it too."""
    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(file.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(sha256_of_file(file).encode() + b"\n")
    return digest.hexdigest()


def check_custom_objects_file(path: Path) -> None:
    if not path.is_file() or path.suffix != ".py":
        raise UserModelError(f"--custom-objects {path}: not a Python file (.py)")


def load_custom_objects(path: Path) -> dict[str, object]:
    """The public module-level classes and functions of a Python file, for Keras's
    `custom_objects`. Importing it runs it: it is the user's own code."""
    check_custom_objects_file(path)
    module_name = "zooserve_custom_objects_" + re.sub(r"\W", "_", path.stem)
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # classes pickled or looked up by module still resolve
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise UserModelError(
            f"--custom-objects {path} failed to import: {type(error).__name__}: "
            f"{_first_line(error)}"
        ) from None
    return {
        name: value
        for name, value in vars(module).items()
        if not name.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))
    }


def load(source: SourceModel, custom_objects: dict[str, object], allow_lambda: bool = False):
    """The model as a Keras model with one output; a SavedModel's serving signature wrapped
    in one, so the rest of the export treats all three formats alike."""
    if source.format == "saved_model":
        model = _load_saved_model(source.path)
    else:
        model = _load_keras_file(source, custom_objects, allow_lambda)
    _check_signature(model, source.path)
    return model


def _load_keras_file(source: SourceModel, custom_objects: dict[str, object], allow_lambda: bool):
    import keras

    with tempfile.TemporaryDirectory(prefix="zooserve-export-") as scratch:
        path = source.path
        suffix = SUFFIX_OF[source.format]
        if path.suffix != suffix and not path.name.endswith(".weights.h5"):
            # Keras picks the reader by the file name: give it one that matches the content.
            path = Path(scratch) / f"model{suffix}"
            path.symlink_to(source.path.resolve())
        try:
            return keras.models.load_model(
                path, custom_objects=custom_objects, compile=False, safe_mode=not allow_lambda
            )
        except Exception as error:  # Keras raises TypeError, ValueError, OSError, KeyError...
            raise UserModelError(_loading_problem(source.path, error)) from None


_MISSING_OBJECT = re.compile(
    r"(?:Could not locate (class|function)|Unknown (layer|object|activation|loss|metric|"
    r"initializer|regularizer|constraint)[^:]*):? '([^']+)'"
)


def _loading_problem(path: Path, error: Exception) -> str:
    """One line for what went wrong loading a Keras file."""
    text = str(error)
    missing = _MISSING_OBJECT.search(text)
    if missing:
        kind = missing.group(1) or missing.group(2)
        return (
            f"{path.name} uses a custom {kind} '{missing.group(3)}' that Keras cannot find: "
            "pass the Python file that defines it with --custom-objects module.py"
        )
    if "Lambda" in text and "safe_mode" in text:
        return (
            f"{path.name} has a Lambda layer, whose Python code Keras loads only with safe "
            "mode off: pass --allow-lambda if you trust the file"
        )
    if "weights" in text.lower() and path.name.endswith(".weights.h5"):
        return f"{path.name} holds weights only, not a model: export the whole model"
    return f"cannot load {path.name} as a Keras model: {type(error).__name__}: {_first_line(error)}"


def _load_saved_model(path: Path):
    """The SavedModel's serving signature as a one-layer Keras model."""
    import keras
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as error:
        raise UserModelError(
            f"cannot load {path.name} as a SavedModel: {type(error).__name__}: {_first_line(error)}"
        ) from None
    signatures = dict(getattr(loaded, "signatures", {}))
    if SERVING_SIGNATURE not in signatures:
        raise UserModelError(
            f"SavedModel {path.name} has no '{SERVING_SIGNATURE}' signature "
            f"(it has: {', '.join(signatures) or 'none'}); save it with model.export(path)"
        )
    function = signatures[SERVING_SIGNATURE]
    specs = function.structured_input_signature[1]
    outputs = function.structured_outputs
    if len(outputs) != 1:
        raise UserModelError(
            f"SavedModel {path.name} returns {len(outputs)} outputs ({', '.join(outputs)}); "
            "zooserve serves models with one output"
        )
    inputs = [
        keras.Input(shape=tuple(spec.shape[1:]), name=tensor_name(key), dtype=spec.dtype.name)
        for key, spec in specs.items()
    ]
    output_key = next(iter(outputs))  # the layer is named after it: the default output name
    layer = _signature_layer(loaded, list(specs), output_key, tensor_name(output_key))
    output = layer(inputs if len(inputs) > 1 else inputs[0])
    return keras.Model(inputs, output, name=tensor_name(path.stem))


def _signature_layer(loaded, input_keys: list[str], output_key: str, name: str):
    """A Keras layer that calls the restored serving signature (by keyword, as signatures
    take their inputs) and returns its one output."""
    import keras

    class SignatureLayer(keras.layers.Layer):
        def __init__(self) -> None:
            super().__init__(trainable=False, name=name)
            self._restored = [loaded]  # a list keeps Keras from tracking it; keeps it alive

        def call(self, inputs):
            tensors = inputs if isinstance(inputs, list | tuple) else [inputs]
            function = self._restored[0].signatures[SERVING_SIGNATURE]
            return function(**dict(zip(input_keys, tensors, strict=True)))[output_key]

    return SignatureLayer()


def _check_signature(model, path: Path) -> None:
    if len(model.outputs) != 1:
        raise UserModelError(
            f"{path.name} has {len(model.outputs)} outputs; zooserve serves models with one"
        )
    for tensor in model.inputs:
        if str(tensor.dtype) != "float32":
            raise UserModelError(
                f"{path.name}: input '{tensor.name}' is {tensor.dtype}; zooserve export "
                "handles float32 inputs only"
            )


# -- tensor names ----------------------------------------------------------------------------


def tensor_name(text: str) -> str:
    """`text` made a valid tensor name: other characters become `_`, a leading digit gets
    `t_` in front, at most 64 characters."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text) or "tensor"
    if not re.match(r"[A-Za-z_]", name):
        name = f"t_{name}"
    return name[:64]


def check_tensor_name(name: str, option: str) -> str:
    if not _TENSOR_NAME.fullmatch(name):
        raise UserModelError(
            f"{option} {name!r} is not a valid tensor name: use ASCII letters, digits and '_', "
            "not starting with a digit, at most 64 characters"
        )
    return name


def model_tensor_names(model) -> tuple[list[str], str]:
    """The served names the model suggests: its input layers' names and its output layer's,
    made valid; distinct ones."""
    inputs = [tensor_name(_input_layer_name(tensor)) for tensor in model.inputs]
    if len(set(inputs)) != len(inputs):
        inputs = [f"input_{i}" for i in range(len(inputs))]
    output_names = getattr(model, "output_names", None) or ["output"]
    output = tensor_name(output_names[0])
    return inputs, output if output not in inputs else f"{output}_output"


def _input_layer_name(tensor) -> str:
    history = getattr(tensor, "_keras_history", None)
    operation = getattr(history, "operation", None)
    return getattr(operation, "name", None) or tensor.name


def input_shapes(model) -> list[tuple[int | None, ...]]:
    """Each input's shape without the batch axis (None where the model leaves it open)."""
    return [tuple(tensor.shape[1:]) for tensor in model.inputs]


def output_width(model) -> int | None:
    """Values per row of the one output, when it is [batch, width]."""
    shape = tuple(model.outputs[0].shape)
    return shape[1] if len(shape) == 2 else None


# -- the test file ---------------------------------------------------------------------------


def check_test_file(path: Path, target: str | None, feature_names: list[str] | None) -> None:
    """What can be seen of a test file without the model: it exists, its kind, and a CSV's
    header has the --target and --feature-names columns."""
    if not path.is_file():
        raise UserModelError(f"--test {path} does not exist")
    if path.suffix not in (".csv", ".npz"):
        raise UserModelError(f"--test {path}: a .csv or .npz file, please")
    if path.suffix != ".csv":
        return
    if target is None:
        raise UserModelError(f"--test {path.name} is a CSV: name its label column with --target")
    with open(path, newline="", errors="replace") as stream:
        header = next(csv.reader(stream), [])
    for column, option in [
        (target, "--target"),
        *((f, "--feature-names") for f in feature_names or []),
    ]:
        if column not in header:
            raise UserModelError(
                f"--test {path.name} has no column '{column}' ({option}); its columns: "
                f"{', '.join(header) or 'none'}"
            )


def read_test_file(
    path: Path,
    target: str | None,
    shapes: list[tuple[int | None, ...]],
    input_names: list[str],
    feature_names: list[str] | None,
) -> TestData:
    """Inputs and targets from a CSV (`target` names the label column, the others are the
    features) or an .npz (`x` and `y`; `x0`, `x1`, ... for several inputs), checked
    against the model's inputs."""
    check_test_file(path, target, feature_names)
    if path.suffix == ".csv":
        x, y = _read_csv(path, target, shapes, input_names, feature_names)
    else:
        x, y = _read_npz(path, shapes)
    arrays = list(x) if isinstance(x, tuple) else [x]
    for array, shape, name in zip(arrays, shapes, input_names, strict=True):
        _check_shape(path, array, shape, name)
    rows = len(arrays[0])
    if rows == 0:
        raise UserModelError(f"--test {path} has no rows")
    if any(len(a) != rows for a in arrays) or len(y) != rows:
        raise UserModelError(f"--test {path}: inputs and targets have different numbers of rows")
    return TestData(x, y, rows, sha256_of_file(path), path.name)


def _read_csv(path, target, shapes, input_names, feature_names):
    import pandas as pd

    if len(shapes) != 1 or len(shapes[0]) != 1:
        shown = ", ".join(f"{n} {[-1, *s]}" for n, s in zip(input_names, shapes, strict=True))
        raise UserModelError(
            f"--test {path.name}: a CSV fits a model with one [batch, features] input, this "
            f"model takes {shown}: use an .npz with arrays x and y"
        )
    try:
        table = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as error:
        raise UserModelError(f"--test {path.name} is not a readable CSV: {error}") from None
    features = feature_names or [c for c in table.columns if c != target]
    width = shapes[0][0]
    if width is not None and len(features) != width:
        raise UserModelError(
            f"--test {path.name} has {len(features)} feature columns "
            f"({', '.join(map(str, features))}); the model's input '{input_names[0]}' takes "
            f"{width}"
        )
    text = [c for c in features if not pd.api.types.is_numeric_dtype(table[c])]
    if text:
        raise UserModelError(
            f"--test {path.name}: feature column {', '.join(map(repr, text))} is not numeric"
        )
    x = table[features].to_numpy(dtype="float32")
    if np.isnan(x).any() or table[target].isna().any():
        raise UserModelError(f"--test {path.name} has missing values")
    return x, table[target].to_numpy()


def _read_npz(path, shapes):
    keys = ["x"] if len(shapes) == 1 else [f"x{i}" for i in range(len(shapes))]
    try:
        with np.load(path, allow_pickle=False) as archive:
            found = set(archive.files)
            missing = [k for k in [*keys, "y"] if k not in found]
            if missing:
                raise UserModelError(
                    f"--test {path.name} has no array {', '.join(missing)} (it has: "
                    f"{', '.join(sorted(found)) or 'none'}); expected {', '.join(keys)} and y"
                )
            arrays = tuple(np.asarray(archive[k], dtype="float32") for k in keys)
            y = np.asarray(archive["y"])
    except (OSError, ValueError) as error:
        raise UserModelError(f"--test {path.name} is not a readable .npz: {error}") from None
    return (arrays if len(arrays) > 1 else arrays[0]), y


def _check_shape(path: Path, array: np.ndarray, shape: tuple, name: str) -> None:
    fits = array.ndim == len(shape) + 1 and all(
        want is None or want == got for want, got in zip(shape, array.shape[1:], strict=True)
    )
    if not fits:
        expected = [-1 if d is None else d for d in shape]
        raise UserModelError(
            f"--test {path.name}: input '{name}' has shape {list(array.shape)}, the model "
            f"takes [rows, {', '.join(map(str, expected))}]"
        )


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:300] if lines else type(error).__name__

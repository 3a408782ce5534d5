"""`zooserve export PATH --name NAME`: a Keras model trained elsewhere, into the model
repository as a new version, through the zoo's own conversion, parity check and card.

Everything that can fail runs before anything is written: load, convert, measure on the test
file. The version is then built in a hidden staging folder inside the model folder (which the
server skips), parity-checked there, and renamed into place last by the repository's
publish_version; on any failure the staging folder goes, and so do the model and repository
folders this export created.
The ledger row is written only once the version is in place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from zooserve.repository.layout import (
    FILES_KEY,
    MODEL_FILE,
    file_hashes,
    model_name_problem,
    write_card,
)
from zooserve.repository.publish import PublishError, publish_version
from zooserve.repository.signing import SigningError, check_private_key, sign_version
from zooserve.training import export, fitting, ledger, provenance
from zooserve.training.data.dataset import Arrays
from zooserve.training.user_model import (
    SourceModel,
    TestData,
    UserModelError,
    check_custom_objects_file,
    check_tensor_name,
    check_test_file,
    identify,
    input_shapes,
    load,
    load_custom_objects,
    model_format,
    model_tensor_names,
    output_width,
    read_test_file,
)

TASKS = ("classification", "regression", "other")
GENERATED_ROWS = 64
# Looser than the zoo's 1e-5: the zoo's models normalise their inputs, a user's may not. The
# lesson's own penguin network takes grams and millimetres as they are; its logits reach about
# 1,000, where float32 rounding alone moves a probability by 3e-5 (Keras itself differs that
# much between batch sizes). A wrong conversion is off by 1e-2 or more.
EXPORT_PARITY_TOLERANCE = 1e-4
GENERATED_SEED = 0
TRAINING_NOTE = (
    "exported from a model trained elsewhere; zooserve did not train or evaluate it beyond "
    "the test file given"
)


@dataclass(frozen=True)
class ExportRequest:
    """What the user asked for on the command line."""

    source: Path
    name: str
    models: Path
    ledger: Path
    labels: list[str] | None = None
    description: str | None = None
    input_names: list[str] | None = None
    output_name: str | None = None
    feature_names: list[str] | None = None
    test: Path | None = None
    target: str | None = None
    custom_objects: Path | None = None
    task: str | None = None
    tolerance: float = EXPORT_PARITY_TOLERANCE
    input_range: tuple[float, float] | None = None  # generated parity inputs: uniform in it
    allow_lambda: bool = False
    sign_key: Path | None = None  # an EC private key (PEM): the version is signed as shipped


@dataclass(frozen=True)
class Signature:
    """The served tensor names and what the output means."""

    input_names: list[str]
    output_name: str
    task: str | None  # None until the outputs are seen (class probabilities or not)
    labels: list[str] | None


@dataclass(frozen=True)
class Measured:
    """The inputs parity is checked on, Keras's outputs there, and the test metrics."""

    x: Arrays
    expected: np.ndarray
    described: str  # what x is, for the card and the messages
    task: str
    test: TestData | None
    metrics: dict[str, float] | None
    primary_metric: str | None


def check_request(request: ExportRequest) -> None:
    """The mistakes that need no TensorFlow to see, before it is imported."""
    problem = model_name_problem(request.name)
    if problem:
        raise UserModelError(f"--name: {problem}")
    if request.task is not None and request.task not in TASKS:
        raise UserModelError(f"--task must be one of {', '.join(TASKS)}")
    if request.labels is not None and len(set(request.labels)) != len(request.labels):
        raise UserModelError("--labels has the same label more than once")
    if not request.tolerance >= 0:
        raise UserModelError(f"--tolerance must be 0 or more, got {request.tolerance}")
    model_format(request.source)
    if request.custom_objects is not None:
        check_custom_objects_file(request.custom_objects)
    if request.test is not None:
        check_test_file(request.test, request.target, request.feature_names)
    if request.models.exists() and not request.models.is_dir():
        raise UserModelError(f"--models {request.models} is not a folder")
    if request.sign_key is not None:
        try:
            check_private_key(request.sign_key)
        except SigningError as error:
            raise UserModelError(f"--sign-key: {error}") from None


def export_user_model(request: ExportRequest) -> Path:
    """Load, convert, measure, and ship the user's model; returns the new version folder."""
    check_request(request)
    source = identify(request.source)
    custom = load_custom_objects(request.custom_objects) if request.custom_objects else {}
    model = load(source, custom, request.allow_lambda)
    signature = _signature(model, request)
    measured = _measure(model, request, signature)
    signature = replace(signature, task=measured.task)
    try:
        proto = export.convert(
            model, signature.input_names, signature.output_name, signature.labels
        )
    except export.ConversionError as error:
        raise UserModelError(f"{error}; zooserve cannot export this model") from None
    target, card = _ship(request, source, signature, measured, proto)
    _ledger_row(request, source, measured, card)
    return target


# -- what the model takes and gives ----------------------------------------------------------


def _signature(model, request: ExportRequest) -> Signature:
    suggested_inputs, suggested_output = model_tensor_names(model)
    input_names = [check_tensor_name(n, "--input-names") for n in request.input_names or []]
    input_names = input_names or suggested_inputs
    if len(input_names) != len(model.inputs):
        raise UserModelError(
            f"--input-names gives {len(input_names)} names, the model has "
            f"{len(model.inputs)} inputs"
        )
    output_name = check_tensor_name(request.output_name or suggested_output, "--output-name")
    if len(set(input_names)) != len(input_names) or output_name in input_names:
        raise UserModelError(
            f"tensor names must differ: inputs {input_names}, output {output_name!r}"
        )
    width = output_width(model)
    if request.labels is not None and width != len(request.labels):
        shape = [-1, *model.outputs[0].shape[1:]]
        raise UserModelError(
            f"--labels gives {len(request.labels)} labels, the model's output "
            f"'{output_name}' has shape {shape}: one label per output value"
        )
    _check_feature_names(request.feature_names, model, input_names)
    task = request.task or ("classification" if request.labels else None)
    return Signature(input_names, output_name, task, request.labels)


def _check_feature_names(names: list[str] | None, model, input_names: list[str]) -> None:
    if names is None:
        return
    shapes = input_shapes(model)
    if len(shapes) != 1 or len(shapes[0]) != 1 or shapes[0][0] != len(names):
        shown = ", ".join(f"{n} {[-1, *s]}" for n, s in zip(input_names, shapes, strict=True))
        raise UserModelError(
            f"--feature-names gives {len(names)} names; they fit one [batch, "
            f"{len(names)}] input, the model takes {shown}"
        )
    if len(set(names)) != len(names):
        raise UserModelError("--feature-names has the same name more than once")


# -- parity inputs and the test metric -------------------------------------------------------


def _measure(model, request: ExportRequest, signature: Signature) -> Measured:
    shapes = input_shapes(model)
    if request.test is not None:
        test = read_test_file(
            request.test, request.target, shapes, signature.input_names, request.feature_names
        )
        x, described = test.x, f"test file {test.file} ({test.rows} rows)"
    else:
        test = None
        x, described = _generated_inputs(shapes, signature.input_names, request.input_range)
    expected = fitting.predict(model, x)
    softmax_like = _softmax_like(expected)
    task = signature.task or ("classification" if softmax_like else "regression")
    if test is None:
        return Measured(x, expected, described, task, None, None, None)
    metrics, primary = _test_metrics(task, test, expected, signature.labels, softmax_like)
    return Measured(x, expected, described, task, test, metrics, primary)


def _generated_inputs(
    shapes: list[tuple[int | None, ...]], names: list[str], input_range
) -> tuple[Arrays, str]:
    open_axes = [n for n, s in zip(names, shapes, strict=True) if None in s]
    if open_axes:
        raise UserModelError(
            f"input {', '.join(open_axes)} has axes of open size: give --test so parity is "
            "checked on real inputs"
        )
    generator = np.random.default_rng(GENERATED_SEED)
    if input_range is None:
        arrays = [generator.normal(size=(GENERATED_ROWS, *s)) for s in shapes]
        law = "normal(0, 1)"
    else:
        low, high = input_range
        arrays = [generator.uniform(low, high, size=(GENERATED_ROWS, *s)) for s in shapes]
        law = f"uniform({low:g}, {high:g})"
    arrays = [a.astype("float32") for a in arrays]
    described = f"generated: {GENERATED_ROWS} rows, {law}, seed {GENERATED_SEED}"
    return (tuple(arrays) if len(arrays) > 1 else arrays[0]), described


def _softmax_like(outputs: np.ndarray) -> bool:
    """Rows of at least two non-negative values summing to 1: class probabilities."""
    if outputs.ndim != 2 or outputs.shape[1] < 2:
        return False
    sums = outputs.sum(axis=1)
    return bool(np.all(outputs >= 0) and np.allclose(sums, 1.0, atol=1e-3))


def _test_metrics(task, test: TestData, predicted, labels, softmax_like) -> tuple[dict, str]:
    if task == "classification":
        classes = _class_indices(test, predicted.shape[-1], labels)
        one_hot = np.eye(predicted.shape[-1])[classes]
        metrics = fitting.score("classification", one_hot, predicted)
        if not softmax_like:  # cross-entropy of logits or scores means nothing
            metrics.pop("loss")
        return metrics, "accuracy"
    y = _numbers(test)
    if y.size != predicted.size:
        raise UserModelError(
            f"--test {test.file}: {y.size // test.rows} target values per row, the model "
            f"gives {predicted.size // test.rows}"
        )
    return fitting.score("regression", y, predicted), "rmse"


def _class_indices(test: TestData, classes: int, labels: list[str] | None) -> np.ndarray:
    """The true class of each test row, from label names, class numbers or one-hot rows."""
    y = test.y
    if y.dtype.kind in "OUS":
        if labels is None:
            raise UserModelError(
                f"--test {test.file}: the targets are text; pass --labels to match them"
            )
        unknown = sorted({str(v) for v in y} - set(labels))
        if unknown:
            raise UserModelError(
                f"--test {test.file}: target {', '.join(map(repr, unknown[:5]))} is not "
                f"one of --labels ({', '.join(labels)})"
            )
        position = {label: i for i, label in enumerate(labels)}
        return np.array([position[str(v)] for v in y])
    if y.ndim == 2 and y.shape[1] == classes:
        return y.argmax(axis=1)
    values = _numbers(test).reshape(-1)
    if values.size != test.rows or np.any(values != np.round(values)):
        raise UserModelError(
            f"--test {test.file}: targets of a classifier are class numbers 0-{classes - 1}, "
            f"label names or one-hot rows of {classes}"
        )
    if values.min() < 0 or values.max() >= classes:
        raise UserModelError(
            f"--test {test.file}: class number {int(values.max())} is out of range for "
            f"{classes} classes (0-{classes - 1})"
        )
    return values.astype(int)


def _numbers(test: TestData) -> np.ndarray:
    try:
        return np.asarray(test.y, dtype="float64")
    except (TypeError, ValueError):
        raise UserModelError(f"--test {test.file}: the targets are not numbers") from None


# -- the version folder ----------------------------------------------------------------------


def _ship(
    request, source: SourceModel, signature: Signature, measured: Measured, proto
) -> tuple[Path, dict]:
    """Build the version in a staging folder and publish it; on any failure leave the
    repository as it was. Returns the version folder and its card."""
    try:
        with publish_version(request.models / request.name) as staged:
            sha256 = export.save(proto, staged.folder / MODEL_FILE)
            difference = _parity(measured, staged.folder, signature, request.tolerance)
            card = _card(
                request, source, signature, measured, proto, staged.version, sha256, difference
            )
            card[FILES_KEY] = file_hashes(staged.folder)  # every file: a load checks them
            write_card(staged.folder, card)
            if request.sign_key is not None:  # signed before it is published, never after
                sign_version(staged.folder, request.sign_key)
    except PublishError as error:
        raise UserModelError(str(error)) from None
    return staged.target, card


def _parity(measured: Measured, staging: Path, signature: Signature, tolerance: float) -> float:
    try:
        return export.check_parity(
            measured.expected, staging / MODEL_FILE, signature.input_names, measured.x,
            tolerance=tolerance, compared_on=measured.described,
        )  # fmt: skip
    except export.ParityError as error:
        # The staging path means nothing to the user: say it without it.
        # And say how to accept a difference the user has judged to be rounding.
        raise export.ParityError(
            str(error).split(": ", 1)[-1] + " (--tolerance allows a larger difference)"
        ) from None


def _card(request, source, signature, measured, proto, version, sha256, difference) -> dict:
    descriptions = _tensor_descriptions(request, signature)
    inputs, outputs = export.tensor_entries(proto, descriptions)
    card: dict = {
        "name": request.name,
        "version": version,
        "task": signature.task,
        "description": request.description
        or f"A Keras model exported from {source.path.name} (trained elsewhere).",
        "inputs": inputs,
        "outputs": outputs,
    }
    if signature.labels is not None:
        card["labels"] = signature.labels
    if request.feature_names:
        card["feature_names"] = request.feature_names
    if measured.test is not None:
        card["metrics"] = measured.metrics
        card["primary_metric"] = measured.primary_metric
        card["dataset"] = {
            "name": measured.test.file,
            "test_rows": measured.test.rows,
            "test_sha256": measured.test.sha256,
            "source": "the test file given to zooserve export",
        }
    card["source"] = _source_section(source)
    card["training"] = {"trained_here": False, "note": TRAINING_NOTE}
    card.update(provenance.card_fields())
    card["onnx"] = {
        **export.card_section(sha256, difference),
        "parity_tolerance": request.tolerance,
        "parity_inputs": measured.described,
    }
    return card


def _tensor_descriptions(request: ExportRequest, signature: Signature) -> dict[str, str]:
    descriptions = {}
    if request.feature_names:
        descriptions[signature.input_names[0]] = ", ".join(request.feature_names)
    if signature.labels is not None:
        descriptions[signature.output_name] = "a score for each label, in the order of labels"
    return descriptions


def _source_section(source: SourceModel) -> dict:
    versions = provenance.library_versions()
    return {
        "exported_from": source.path.name,
        "sha256": source.sha256,
        "format": source.format,
        "keras": versions["keras"],
        "tensorflow": versions["tensorflow"],
        "exported": provenance.utc_now()[:10],
    }


def _ledger_row(request, source: SourceModel, measured: Measured, card: dict) -> None:
    test = measured.test
    ledger.append(
        request.ledger,
        {
            "created": card["created"],
            "model": request.name,
            "version": card["version"],
            "task": card["task"],
            "description": card["description"],
            "metrics": measured.metrics or {},
            "baselines": {},
            "test_set": test.file if test else "",
            "test_rows": test.rows if test else "",
            "test_sha256": test.sha256 if test else "",
            "git_commit": card["git_commit"],
            "source": f"exported from {source.path.name} ({source.format}, sha256 {source.sha256})",
        },
    )

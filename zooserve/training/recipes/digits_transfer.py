"""Transfer learning (lesson episode 5): a new head on a frozen, pretrained base.

Data: the digits data restricted to digits 5-9, with only 10 training images per digit (the
"small split"), tested on all test images of 5-9. Model: the digits CNN trained on digits 0-4
(or the user's `--weights`), cut after Flatten as the lesson's `include_top=False` and
frozen, plus a new head Dense 50 relu -> Dense 5 softmax. Fit: 40 epochs, batch 16.
Baseline: the same network from random weights, all trainable, on the same small split.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from zooserve.repository.layout import sha256_of_file
from zooserve.training import fitting
from zooserve.training.data.dataset import DataFileMissing, Dataset
from zooserve.training.data.images import describe_image, few_per_class, only_classes, shows_digits
from zooserve.training.fitting import FitSettings
from zooserve.training.recipes import digits
from zooserve.training.spec import CardText, ModelSpec, TrainOptions

if TYPE_CHECKING:
    import keras

BASE_CLASSES = [0, 1, 2, 3, 4]
TASK_CLASSES = [5, 6, 7, 8, 9]
TASK_PER_CLASS = 10  # training images per new class: the "small split"


def _kind(dataset: Dataset) -> str:
    """What the classes are called in names and notes: digits for MNIST, else classes."""
    return "digits" if shows_digits(dataset) else "classes"


def load_data(options: TrainOptions) -> Dataset:
    everything = digits.load_data(options)
    task = only_classes(everything, TASK_CLASSES, f"{everything.name} ({_kind(everything)} 5-9)")
    return few_per_class(task, TASK_PER_CLASS, seed=options.seed)


def pretrained_base(
    image_shape: tuple[int, ...], options: TrainOptions, notes: dict[str, object]
) -> keras.Model:
    """The frozen base: the digits CNN trained on classes 0-4, or the user's weights file."""
    import keras

    if options.weights:
        classifier = _load_user_classifier(Path(options.weights), image_shape)
        notes["base"] = {
            "source": f"user weights {Path(options.weights).name}",
            "sha256": sha256_of_file(Path(options.weights)),
        }
    else:
        classifier = _train_base_classifier(image_shape, options, notes)
    # As the lesson's include_top=False: the convolutional part, up to and with Flatten, is the
    # base; its dense layers learnt classes 0-4 specifically and are left behind.
    flatten = [layer for layer in classifier.layers if isinstance(layer, keras.layers.Flatten)]
    top = flatten[-1] if flatten else classifier.layers[-2]
    return keras.Model(classifier.inputs, top.output, name="pretrained_base")


def _load_user_classifier(path: Path, image_shape: tuple[int, ...]) -> keras.Model:
    import keras

    if not path.is_file():
        raise DataFileMissing(
            f"weights file not found at {path}: pass a local .keras model or a .weights.h5 "
            "file saved from zooserve.training.recipes.digits.image_classifier(shape, 5)"
        )
    if path.suffix == ".keras":
        return keras.models.load_model(path, compile=False)
    classifier = digits.image_classifier(image_shape, classes=len(BASE_CLASSES))
    classifier.load_weights(path)
    return classifier


def _train_base_classifier(
    image_shape: tuple[int, ...], options: TrainOptions, notes: dict[str, object]
) -> keras.Model:
    """The digits recipe's CNN and fit settings, on classes 0-4 of the same data set."""
    everything = digits.load_data(options)
    kind = _kind(everything)
    base_name = "digits 0-4" if kind == "digits" else f"{everything.name} (classes 0-4)"
    base_data = only_classes(everything, BASE_CLASSES, base_name).subset(options.subset)
    if options.verbose:
        print(f"\ntraining the base on {base_data.name}: {len(base_data.y_train)} images")
    classifier = digits.image_classifier(image_shape, classes=len(BASE_CLASSES))
    _, epochs_run, seconds = fitting.fit(
        classifier, base_data.x_train, base_data.y_train, digits.FIT.capped(options.epochs),
        label=f"base ({base_data.name})", verbose=options.verbose,
    )  # fmt: skip
    metrics = fitting.score(
        "classification", base_data.y_test, fitting.predict(classifier, base_data.x_test)
    )
    notes["base"] = {
        "source": f"this zoo's digits CNN trained on {kind} 0-4 of the same data set",
        "classes": base_data.labels,
        "train_rows": len(base_data.y_train),
        "epochs_run": epochs_run,
        "fit_seconds": round(seconds, 1),
        f"test_metrics_on_{kind}_0_4": metrics,
    }
    print(f"base test metrics on {kind} 0-4: {metrics}")
    return classifier


def transfer_classifier(base: keras.Model, classes: int, freeze_base: bool = True) -> keras.Model:
    """A pretrained base plus a new trainable head (Dense 50 relu, softmax).

    With `freeze_base` the base's weights stay as they are and it runs in inference mode
    (its Dropout off); without, the whole network trains: the from-scratch comparison.
    """
    import keras

    base.trainable = not freeze_base
    inputs = keras.Input(shape=base.input_shape[1:], name="image")
    x = base(inputs, training=False) if freeze_base else base(inputs)
    x = keras.layers.Dense(50, activation="relu", name="head_dense")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="transfer_classifier")


def build_model(dataset: Dataset, options: TrainOptions, notes: dict[str, object]) -> keras.Model:
    base = pretrained_base(dataset.x_train.shape[1:], options, notes)
    # The head starts from the same seed whether or not a base was fit.
    fitting.set_seeds(options.seed)
    return transfer_classifier(base, classes=len(dataset.labels))


FIT = FitSettings(epochs=40, batch_size=16, loss="categorical_crossentropy", metrics=("accuracy",))


def scratch_baseline(
    dataset: Dataset, options: TrainOptions, settings: FitSettings
) -> dict[str, dict[str, float]]:
    """The same network, base and head, trained from random weights on the same small split."""
    if options.verbose:
        print("\nbaseline: the same network trained from scratch on the same split")
    fitting.set_seeds(options.seed)
    model = transfer_classifier(
        digits.convolutional_base(dataset.x_train.shape[1:]), len(dataset.labels),
        freeze_base=False,
    )  # fmt: skip
    fitting.fit(
        model, dataset.x_train, dataset.y_train, settings, label="scratch baseline",
        verbose=options.verbose,
    )  # fmt: skip
    y_pred = fitting.predict(model, dataset.x_test)
    return {"scratch": fitting.score("classification", dataset.y_test, y_pred)}


def describe(dataset: Dataset) -> CardText:
    """Digits 5-9 for MNIST; for Dollar Street, the household objects it learnt."""
    per_class = f"{TASK_PER_CLASS} images per"
    if shows_digits(dataset):
        description = (
            f"Handwritten digit 5-9, learnt from {per_class} digit on top of a frozen "
            "CNN pretrained on digits 0-4."
        )
        output = "probability of each digit 5-9, in the order of labels"
    else:
        description = (
            f"Household object ({', '.join(dataset.labels)}), learnt from {per_class} class "
            "on top of a frozen CNN pretrained on five other Dollar Street classes."
        )
        output = "probability of each object class, in the order of labels"
    return CardText(
        description=description,
        inputs={"image": describe_image(dataset)},
        output=("probabilities", output),
    )


SPECS = [
    ModelSpec(
        name="digits_transfer",
        task="classification",
        primary_metric="accuracy",
        higher_is_better=True,
        tolerance="test accuracy within 0.03 of the card, and above the scratch baseline",
        describe=describe,
        load=load_data,
        build=build_model,
        fit=FIT,
        baselines=scratch_baseline,
    )
]

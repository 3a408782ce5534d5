"""The model registry: a model is a data loader, an architecture and one entry here.

Entries are plain data plus small functions; nothing heavy is imported until a model is
actually trained, so listing the names stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training import datasets
from training.datasets import Dataset
from training.fitting import FitSettings


@dataclass(frozen=True)
class TrainOptions:
    """What the user chose on the command line."""

    models: Path = Path("models")
    ledger: Path = Path("results/ledger.csv")
    overwrite: bool = False
    epochs: int | None = None  # cap on epochs (quick runs)
    subset: int | None = None  # first N train and test samples (quick runs)
    data: str | None = None  # the lesson's real data files, where a loader takes them
    weights: str | None = None  # a local Keras weights file (transfer learning)
    seed: int = 0


@dataclass(frozen=True)
class Companion:
    """A second model shipped from the same training run (the siamese net's embedder)."""

    name: str  # its registry entry, which gives description, tensors and task
    model: object  # keras.Model
    x_test: datasets.Arrays  # inputs for its parity check
    y_true: np.ndarray  # for its metrics and plot
    y_score: np.ndarray
    metrics: dict[str, float]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str  # classification | regression | similarity | embedding
    description: str
    inputs: dict[str, str]  # served input tensor name -> description, in model order
    output: tuple[str, str]  # served output tensor name, description
    primary_metric: str
    higher_is_better: bool
    tolerance: str  # how closely a rerun reproduces the shipped card
    load: Callable[[TrainOptions], Dataset] | None = None
    build: Callable[..., object] | None = None  # (dataset, options, settings, notes) -> Model
    fit: FitSettings | None = None
    baselines: Callable[..., dict] | None = None  # (dataset, options, settings) -> {name: metrics}
    companions: Callable[..., list[Companion]] | None = None  # (model, dataset) -> [...]
    trained_by: str | None = None  # this model is shipped by another entry's training run
    card_notes: dict = field(default_factory=dict)


# --- penguins ----------------------------------------------------------------------------


def _build_penguins(dataset: Dataset, options, settings, notes) -> object:
    from training.architectures import penguin_classifier

    return penguin_classifier(dataset.x_train, classes=len(dataset.labels))


# --- weather -----------------------------------------------------------------------------


def _load_weather(options: TrainOptions) -> Dataset:
    if options.data:
        return datasets.load_weather_csv(options.data)
    return datasets.load_seattle_weather()


def _build_weather(dataset: Dataset, options, settings, notes) -> object:
    from training.architectures import weather_regressor

    notes["target"] = dataset.extras["target"]
    return weather_regressor(dataset.x_train)


def _persistence(dataset: Dataset, options, settings) -> dict:
    """Tomorrow = today, scored on the same test days."""
    from training.fitting import score

    return {"persistence": score("regression", dataset.y_test, dataset.extras["test_persistence"])}


# --- digits ------------------------------------------------------------------------------


def _load_digits(options: TrainOptions) -> Dataset:
    return datasets.load_digits_data(options.data)


def _build_digits(dataset: Dataset, options, settings, notes) -> object:
    from training.architectures import image_classifier

    return image_classifier(dataset.x_train.shape[1:], classes=len(dataset.labels))


# --- transfer learning -------------------------------------------------------------------

BASE_CLASSES = [0, 1, 2, 3, 4]
TASK_CLASSES = [5, 6, 7, 8, 9]
TASK_PER_CLASS = 10  # training images per new class: the "small split"


def _load_transfer_task(options: TrainOptions) -> Dataset:
    everything = datasets.load_digits_data(options.data)
    task = datasets.only_classes(everything, TASK_CLASSES, f"{everything.name} (digits 5-9)")
    return datasets.few_per_class(task, TASK_PER_CLASS, seed=options.seed)


def _pretrained_base(image_shape, options: TrainOptions, settings: FitSettings, notes) -> object:
    """The frozen base: the digits CNN trained on digits 0-4, or the user's weights file."""
    import keras

    from training import fitting
    from training.architectures import image_classifier

    if options.weights:
        path = Path(options.weights)
        if not path.is_file():
            raise datasets.DataFileMissing(
                f"weights file not found at {path}: pass a local .keras model or a .weights.h5 "
                "file saved from training.architectures.image_classifier(shape, 5)"
            )
        if path.suffix == ".keras":
            classifier = keras.models.load_model(path, compile=False)
        else:
            classifier = image_classifier(image_shape, classes=len(BASE_CLASSES))
            classifier.load_weights(path)
        notes["base"] = {
            "source": f"user weights {path.name}",
            "sha256": datasets.sha256_of_file(path),
        }
    else:
        everything = datasets.load_digits_data(options.data)
        base_data = datasets.only_classes(everything, BASE_CLASSES, "digits 0-4")
        base_data = base_data.subset(options.subset)
        print(f"\ntraining the base on {base_data.name}: {len(base_data.y_train)} images")
        classifier = image_classifier(image_shape, classes=len(BASE_CLASSES))
        _, epochs_run, seconds = fitting.fit(
            classifier, base_data.x_train, base_data.y_train, DIGITS_FIT if not options.epochs
            else _capped(DIGITS_FIT, options.epochs),
        )  # fmt: skip
        predictions = fitting.predict(classifier, base_data.x_test)
        notes["base"] = {
            "source": "this zoo's digits CNN trained on digits 0-4 of the same data set",
            "classes": base_data.labels,
            "train_rows": len(base_data.y_train),
            "epochs_run": epochs_run,
            "fit_seconds": round(seconds, 1),
            "test_metrics_on_digits_0_4": fitting.score(
                "classification", base_data.y_test, predictions
            ),
        }
        print(f"base test metrics on digits 0-4: {notes['base']['test_metrics_on_digits_0_4']}")
    # As the lesson's include_top=False: the convolutional part, up to and with Flatten, is the
    # base; its dense layers learnt digits 0-4 specifically and are left behind.
    flatten = [layer for layer in classifier.layers if isinstance(layer, keras.layers.Flatten)]
    top = flatten[-1] if flatten else classifier.layers[-2]
    return keras.Model(classifier.inputs, top.output, name="pretrained_base")


def _build_transfer(dataset: Dataset, options, settings, notes) -> object:
    from training.architectures import transfer_classifier
    from training.fitting import set_seeds

    base = _pretrained_base(dataset.x_train.shape[1:], options, settings, notes)
    set_seeds(options.seed)  # the head starts from the same seed whether or not a base was fit
    return transfer_classifier(base, classes=len(dataset.labels))


def _scratch(dataset: Dataset, options, settings) -> dict:
    """The same network, base and head, trained from random weights on the same small split."""
    from training import fitting
    from training.architectures import convolutional_base, transfer_classifier

    print("\nbaseline: the same network trained from scratch on the same split")
    fitting.set_seeds(options.seed)
    model = transfer_classifier(
        convolutional_base(dataset.x_train.shape[1:]), len(dataset.labels), freeze_base=False
    )
    fitting.fit(model, dataset.x_train, dataset.y_train, settings)
    return {
        "scratch": fitting.score(
            "classification", dataset.y_test, fitting.predict(model, dataset.x_test)
        )
    }


# --- spectra -----------------------------------------------------------------------------


def _load_spectra(options: TrainOptions) -> Dataset:
    return datasets.load_spectra_data(options.data)


def _build_siamese(dataset: Dataset, options, settings, notes) -> object:
    from training.architectures import siamese_similarity, spectrum_embedder

    return siamese_similarity(spectrum_embedder(bins=dataset.x_train[0].shape[1]))


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)).reshape(-1, 1)


def _raw_cosine(dataset: Dataset, options, settings) -> dict:
    """The obvious baseline: cosine similarity of the binned spectra themselves."""
    from training.fitting import score

    a, b = dataset.x_test
    return {"raw_cosine": score("similarity", dataset.y_test, _cosine(a, b))}


def _embedder(model, dataset: Dataset) -> list[Companion]:
    """Ship the shared embedder too, scored by the cosine of its embeddings on the test pairs."""
    from training import fitting

    embedder = model.get_layer("spectrum_embedder")
    a, b = dataset.x_test
    scores = _cosine(fitting.predict(embedder, a), fitting.predict(embedder, b))
    return [
        Companion(
            name="spectra_embedding",
            model=embedder,
            x_test=dataset.extras["test_spectra"],
            y_true=dataset.y_test,
            y_score=scores,
            metrics=fitting.score("similarity", dataset.y_test, scores),
        )
    ]


# --- the entries -------------------------------------------------------------------------

PENGUINS_FIT = FitSettings(
    epochs=150, batch_size=16, loss="categorical_crossentropy", metrics=("accuracy",)
)
WEATHER_FIT = FitSettings(
    epochs=200, batch_size=32, loss="mse", metrics=("rmse",), early_stopping_patience=10
)
DIGITS_FIT = FitSettings(
    epochs=20, batch_size=32, loss="categorical_crossentropy", metrics=("accuracy",),
    early_stopping_patience=3,
)  # fmt: skip
TRANSFER_FIT = FitSettings(
    epochs=40, batch_size=16, loss="categorical_crossentropy", metrics=("accuracy",)
)
SPECTRA_FIT = FitSettings(
    epochs=30, batch_size=128, loss="mse", metrics=("rmse",), early_stopping_patience=5
)


def _capped(settings: FitSettings, epochs: int | None) -> FitSettings:
    from dataclasses import replace

    return replace(settings, epochs=min(settings.epochs, epochs)) if epochs else settings


SPECTRUM = "binned MS/MS spectrum: 200 m/z bins (10-1000), intensities scaled to max 1"

REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            name="penguins",
            task="classification",
            description="Penguin species from four body measurements (Palmer penguins).",
            inputs={
                "features": "raw bill_length_mm, bill_depth_mm, flipper_length_mm, body_mass_g"
            },
            output=("probabilities", "probability of each species, in the order of labels"),
            primary_metric="accuracy",
            higher_is_better=True,
            tolerance="test accuracy within 0.03 of the card (2 of 69 test penguins)",
            load=lambda options: datasets.load_penguins(),
            build=_build_penguins,
            fit=PENGUINS_FIT,
        ),
        ModelSpec(
            name="weather",
            task="regression",
            description=(
                "Tomorrow's maximum temperature in Seattle from today's and yesterday's weather."
            ),
            inputs={"features": "raw weather features, in the order of feature_names"},
            output=("prediction", "tomorrow's value of the target (temp_max in C by default)"),
            primary_metric="rmse",
            higher_is_better=False,
            tolerance="test RMSE within 0.15 of the card, and below the persistence baseline",
            load=_load_weather,
            build=_build_weather,
            fit=WEATHER_FIT,
            baselines=_persistence,
        ),
        ModelSpec(
            name="digits",
            task="classification",
            description="Handwritten digit 0-9 in a 28x28 grey image (MNIST).",
            inputs={"image": "28x28x1 grey image, raw pixel values 0-255 (white digit on black)"},
            output=("probabilities", "probability of each digit, in the order of labels"),
            primary_metric="accuracy",
            higher_is_better=True,
            tolerance="test accuracy within 0.01 of the card",
            load=_load_digits,
            build=_build_digits,
            fit=DIGITS_FIT,
        ),
        ModelSpec(
            name="digits_transfer",
            task="classification",
            description=(
                "Handwritten digit 5-9, learnt from 10 images per digit on top of a frozen "
                "CNN pretrained on digits 0-4."
            ),
            inputs={"image": "28x28x1 grey image, raw pixel values 0-255 (white digit on black)"},
            output=("probabilities", "probability of each digit 5-9, in the order of labels"),
            primary_metric="accuracy",
            higher_is_better=True,
            tolerance="test accuracy within 0.03 of the card, and above the scratch baseline",
            load=_load_transfer_task,
            build=_build_transfer,
            fit=TRANSFER_FIT,
            baselines=_scratch,
        ),
        ModelSpec(
            name="spectra_similarity",
            task="similarity",
            description=(
                "Structural similarity (predicted Tanimoto score) of the molecules behind two "
                "mass spectra, siamese network in the style of MS2DeepScore."
            ),
            inputs={"spectrum_a": SPECTRUM, "spectrum_b": SPECTRUM},
            output=("similarity", "cosine of the two spectra's embeddings, 0..1"),
            primary_metric="rmse",
            higher_is_better=False,
            tolerance="test RMSE within 0.01 of the card",
            load=_load_spectra,
            build=_build_siamese,
            fit=SPECTRA_FIT,
            baselines=_raw_cosine,
            companions=_embedder,
        ),
        ModelSpec(
            name="spectra_embedding",
            task="embedding",
            description=(
                "200-number embedding of a mass spectrum; the cosine of two embeddings "
                "predicts the molecules' Tanimoto similarity (embed once, compare many)."
            ),
            inputs={"spectrum": SPECTRUM},
            output=("embedding", "200 non-negative numbers; compare two by cosine similarity"),
            primary_metric="rmse",
            higher_is_better=False,
            tolerance="test RMSE (cosine of embeddings vs Tanimoto) within 0.01 of the card",
            trained_by="spectra_similarity",
        ),
    ]
}


def names() -> list[str]:
    return list(REGISTRY)


def lookup(name: str) -> ModelSpec:
    if name not in REGISTRY:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(REGISTRY)}")
    return REGISTRY[name]

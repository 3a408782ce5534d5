"""Spectra (the lesson's outlook, MS2DeepScore): a siamese network that ships two models.

Data: pairs of binned mass spectra scored by their molecules' Tanimoto similarity, simulated
offline or read from an MGF file with `--data`; test pairs use unseen molecules. Model: a
shared embedder (Dense 500, BN, Dense 500, BN, Dropout 0.2, Dense 200) applied to both
spectra, scored by the cosine of the two embeddings. Fit: mse, adam, up to 30 epochs, early
stopping. Baseline: the cosine of the binned spectra themselves. The run ships
`spectra_similarity` (the two-input model) and `spectra_embedding` (the embedder alone).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from zooserve.spectra.binning import ZOO_BINNING
from zooserve.training import fitting
from zooserve.training.data.dataset import Dataset
from zooserve.training.data.spectra import load_spectra_files, load_synthetic_spectra
from zooserve.training.fitting import FitSettings
from zooserve.training.spec import CardText, Companion, ModelSpec, TrainOptions

if TYPE_CHECKING:
    import keras


def load_data(options: TrainOptions) -> Dataset:
    """Synthetic pairs by default, an MGF + JSON pair with `--data`; both drawn with --seed."""
    if options.data:
        return load_spectra_files(options.data, seed=options.seed)
    return load_synthetic_spectra(seed=options.seed)


def spectrum_embedder(bins: int, embedding: int = 200) -> keras.Model:
    """The MS2DeepScore-style base: Dense 500, BN, Dense 500, BN, Dropout 0.2, Dense 200."""
    import keras

    inputs = keras.Input(shape=(bins,), name="spectrum")
    x = keras.layers.Dense(500, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dense(500, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(embedding, activation="relu", name="embedding")(x)
    return keras.Model(inputs, outputs, name="spectrum_embedder")


def build_model(dataset: Dataset, options: TrainOptions, notes: dict[str, object]) -> keras.Model:
    """Two spectra through one shared embedder, scored by the cosine of their embeddings."""
    import keras

    bins = dataset.x_train[0].shape[1]
    embedder = spectrum_embedder(bins)
    a = keras.Input(shape=(bins,), name="spectrum_a")
    b = keras.Input(shape=(bins,), name="spectrum_b")
    score = keras.layers.Dot(axes=1, normalize=True, name="similarity")([embedder(a), embedder(b)])
    return keras.Model([a, b], score, name="siamese_similarity")


FIT = FitSettings(
    epochs=30, batch_size=128, loss="mse", metrics=("rmse",), early_stopping_patience=5
)


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (np.sum(a * b, axis=1) / np.maximum(norms, 1e-12)).reshape(-1, 1)


def raw_cosine_baseline(
    dataset: Dataset, options: TrainOptions, settings: FitSettings
) -> dict[str, dict[str, float]]:
    """The obvious baseline: cosine similarity of the binned spectra themselves."""
    a, b = dataset.x_test
    return {"raw_cosine": fitting.score("similarity", dataset.y_test, _cosine(a, b))}


def embedder_companion(model: keras.Model, dataset: Dataset) -> list[Companion]:
    """Ship the shared embedder too, scored by the cosine of its embeddings on the test pairs."""
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


SPECTRUM = f"binned MS/MS spectrum: {ZOO_BINNING.describe()} (zooserve/spectra/binning.py)"


def describe_similarity(dataset: Dataset) -> CardText:
    return CardText(
        description=(
            "Structural similarity (predicted Tanimoto score) of the molecules behind two "
            "mass spectra, siamese network in the style of MS2DeepScore."
        ),
        inputs={"spectrum_a": SPECTRUM, "spectrum_b": SPECTRUM},
        output=("similarity", "cosine of the two spectra's embeddings, 0..1"),
        input_binning=ZOO_BINNING.to_dict(),
    )


def describe_embedding(dataset: Dataset) -> CardText:
    return CardText(
        description=(
            "200-number embedding of a mass spectrum; the cosine of two embeddings "
            "predicts the molecules' Tanimoto similarity (embed once, compare many)."
        ),
        inputs={"spectrum": SPECTRUM},
        output=("embedding", "200 non-negative numbers; compare two by cosine similarity"),
        input_binning=ZOO_BINNING.to_dict(),
    )


SPECS = [
    ModelSpec(
        name="spectra_similarity",
        task="similarity",
        primary_metric="rmse",
        higher_is_better=False,
        tolerance="test RMSE within 0.01 of the card",
        describe=describe_similarity,
        load=load_data,
        build=build_model,
        fit=FIT,
        baselines=raw_cosine_baseline,
        companions=embedder_companion,
    ),
    ModelSpec(
        name="spectra_embedding",
        task="embedding",
        primary_metric="rmse",
        higher_is_better=False,
        tolerance="test RMSE (cosine of embeddings vs Tanimoto) within 0.01 of the card",
        describe=describe_embedding,
        trained_by="spectra_similarity",
    ),
]

"""Penguins (lesson episode 2): species from four body measurements.

Data: the Palmer penguins table, stratified 80/20. Model: Normalization -> Dense 10 relu ->
Dense 3 softmax. Fit: categorical cross-entropy, adam, 150 epochs, batch 16. No baseline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zooserve.training.data.dataset import Dataset
from zooserve.training.data.penguins import load_penguins
from zooserve.training.fitting import FitSettings
from zooserve.training.spec import CardText, ModelSpec, TrainOptions

if TYPE_CHECKING:
    import keras


def load_data(options: TrainOptions) -> Dataset:
    return load_penguins()


def build_model(dataset: Dataset, options: TrainOptions, notes: dict[str, object]) -> keras.Model:
    """Dense 10 relu -> Dense softmax, with normalisation inside the model."""
    import keras

    from zooserve.training.normalization import normalization_layer

    inputs = keras.Input(shape=(dataset.x_train.shape[1],), name="features")
    x = normalization_layer(dataset.x_train)(inputs)
    x = keras.layers.Dense(10, activation="relu")(x)
    outputs = keras.layers.Dense(len(dataset.labels), activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="penguin_classifier")


FIT = FitSettings(epochs=150, batch_size=16, loss="categorical_crossentropy", metrics=("accuracy",))


def describe(dataset: Dataset) -> CardText:
    return CardText(
        description="Penguin species from four body measurements (Palmer penguins).",
        inputs={"features": "raw bill_length_mm, bill_depth_mm, flipper_length_mm, body_mass_g"},
        output=("probabilities", "probability of each species, in the order of labels"),
    )


SPECS = [
    ModelSpec(
        name="penguins",
        task="classification",
        primary_metric="accuracy",
        higher_is_better=True,
        tolerance="test accuracy within 0.03 of the card (2 of 69 test penguins)",
        describe=describe,
        load=load_data,
        build=build_model,
        fit=FIT,
    )
]

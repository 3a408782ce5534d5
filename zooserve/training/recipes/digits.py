"""Digits (lesson episode 4): an image CNN.

Data: the 5000 MNIST digits offline (stratified 80/20), or the lesson's Dollar Street 10
photos with `--data`. Model: Rescaling -> Conv2D 50 -> MaxPool -> Conv2D 50 -> MaxPool ->
Dropout 0.5 -> Flatten -> Dense 50 relu -> Dense softmax. Fit: categorical cross-entropy,
adam, up to 20 epochs, early stopping. No baseline.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zooserve.training.data.dataset import Dataset
from zooserve.training.data.images import (
    describe_image,
    load_dollar_street,
    load_mnist_5k,
    shows_digits,
)
from zooserve.training.fitting import FitSettings
from zooserve.training.spec import CardText, ModelSpec, TrainOptions

if TYPE_CHECKING:
    import keras


def load_data(options: TrainOptions) -> Dataset:
    """MNIST 5k by default, Dollar Street when `--data` names its folder."""
    return load_dollar_street(options.data) if options.data else load_mnist_5k()


def convolutional_base(image_shape: tuple[int, ...], name: str = "cnn_base") -> keras.Model:
    """The feature extractor: Conv-MaxPool-Conv-MaxPool-Dropout-Flatten-Dense 50.

    Pixels arrive raw (0-255) and are rescaled inside. The lesson's Dropout variant uses a
    rate of 0.8 on 64x64 photos; 0.5 suits the 28x28 digits stand-in.
    """
    import keras

    inputs = keras.Input(shape=image_shape, name="image")
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(50, (3, 3), activation="relu")(x)
    x = keras.layers.MaxPooling2D((2, 2))(x)
    x = keras.layers.Conv2D(50, (3, 3), activation="relu")(x)
    x = keras.layers.MaxPooling2D((2, 2))(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Flatten()(x)
    features = keras.layers.Dense(50, activation="relu")(x)
    return keras.Model(inputs, features, name=name)


def image_classifier(image_shape: tuple[int, ...], classes: int) -> keras.Model:
    """The convolutional base plus a Dense softmax over the classes."""
    import keras

    base = convolutional_base(image_shape)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(base.output)
    return keras.Model(base.input, outputs, name="image_classifier")


def build_model(dataset: Dataset, options: TrainOptions, notes: dict[str, object]) -> keras.Model:
    return image_classifier(dataset.x_train.shape[1:], classes=len(dataset.labels))


FIT = FitSettings(
    epochs=20, batch_size=32, loss="categorical_crossentropy", metrics=("accuracy",),
    early_stopping_patience=3,
)  # fmt: skip


def describe(dataset: Dataset) -> CardText:
    """Digits for MNIST; for Dollar Street, household objects and its class names."""
    if shows_digits(dataset):
        description = "Handwritten digit 0-9 in a 28x28 grey image (MNIST)."
        output = "probability of each digit, in the order of labels"
    else:
        height, width = dataset.x_train.shape[1:3]
        description = (
            f"Household object in a {height}x{width} colour photo, one of "
            f"{len(dataset.labels)} classes ({', '.join(dataset.labels)}) ({dataset.name})."
        )
        output = "probability of each object class, in the order of labels"
    return CardText(
        description=description,
        inputs={"image": describe_image(dataset)},
        output=("probabilities", output),
    )


SPECS = [
    ModelSpec(
        name="digits",
        task="classification",
        primary_metric="accuracy",
        higher_is_better=True,
        tolerance="test accuracy within 0.01 of the card",
        describe=describe,
        load=load_data,
        build=build_model,
        fit=FIT,
    )
]

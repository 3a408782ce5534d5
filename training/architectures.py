"""The lesson's architectures, one function each.

Every model takes what a client sends (raw measurements, raw 0-255 pixels) and does its own
scaling inside, so the exported ONNX file needs no preprocessing code next to it. Input and
output layers carry the tensor names the served model exposes.
"""

from __future__ import annotations

import keras
import numpy as np


def _normalization(x_train: np.ndarray) -> keras.layers.Normalization:
    """A Normalization layer with the training split's mean and variance (what `adapt` does).

    A feature that is constant in the training split (no snow in a short subset) keeps
    variance 1, as scikit-learn's StandardScaler does: Keras would divide by 1e-7 and turn
    the first unseen value into a 1e7 input.
    """
    x = np.asarray(x_train, dtype="float64")
    mean, variance = x.mean(axis=0), x.var(axis=0)
    variance[variance < 1e-12] = 1.0
    return keras.layers.Normalization(
        axis=-1, mean=mean.astype("float32"), variance=variance.astype("float32"),
        name="normalization",
    )  # fmt: skip


def penguin_classifier(x_train: np.ndarray, classes: int) -> keras.Model:
    """Episode 2: Dense 10 relu -> Dense softmax, with normalisation inside the model."""
    inputs = keras.Input(shape=(x_train.shape[1],), name="features")
    x = _normalization(x_train)(inputs)
    x = keras.layers.Dense(10, activation="relu")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="penguin_classifier")


def weather_regressor(x_train: np.ndarray) -> keras.Model:
    """Episode 3, the BatchNormalization variant: BN -> Dense 100 -> Dense 50 -> Dense 1.

    A Normalization layer in front lets clients send raw measurements.
    """
    inputs = keras.Input(shape=(x_train.shape[1],), name="features")
    x = _normalization(x_train)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dense(100, activation="relu")(x)
    x = keras.layers.Dense(50, activation="relu")(x)
    outputs = keras.layers.Dense(1, name="prediction")(x)
    return keras.Model(inputs, outputs, name="weather_regressor")


def convolutional_base(image_shape: tuple[int, ...], name: str = "cnn_base") -> keras.Model:
    """Episode 4's feature extractor: Conv-MaxPool-Conv-MaxPool-Dropout-Flatten-Dense 50.

    Pixels arrive raw (0-255) and are rescaled inside. The lesson's Dropout variant uses a
    rate of 0.8 on 64x64 photos; 0.5 suits the 28x28 digits stand-in.
    """
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
    """Episode 4's CNN: the convolutional base plus a Dense softmax over the classes."""
    base = convolutional_base(image_shape)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(base.output)
    return keras.Model(base.input, outputs, name="image_classifier")


def transfer_classifier(base: keras.Model, classes: int, freeze_base: bool = True) -> keras.Model:
    """Episode 5: a pretrained base plus a new trainable head (Dense 50 relu, softmax).

    With `freeze_base` the base's weights stay as they are and it runs in inference mode
    (its Dropout off); without, the whole network trains: the from-scratch comparison.
    """
    base.trainable = not freeze_base
    inputs = keras.Input(shape=base.input_shape[1:], name="image")
    x = base(inputs, training=False) if freeze_base else base(inputs)
    x = keras.layers.Dense(50, activation="relu", name="head_dense")(x)
    outputs = keras.layers.Dense(classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="transfer_classifier")


def spectrum_embedder(bins: int, embedding: int = 200) -> keras.Model:
    """The MS2DeepScore-style base: Dense 500, BN, Dense 500, BN, Dropout 0.2, Dense 200."""
    inputs = keras.Input(shape=(bins,), name="spectrum")
    x = keras.layers.Dense(500, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dense(500, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Dropout(0.2)(x)
    outputs = keras.layers.Dense(embedding, activation="relu", name="embedding")(x)
    return keras.Model(inputs, outputs, name="spectrum_embedder")


def siamese_similarity(embedder: keras.Model) -> keras.Model:
    """Two spectra through one shared embedder, scored by the cosine of their embeddings."""
    bins = embedder.input_shape[-1]
    a = keras.Input(shape=(bins,), name="spectrum_a")
    b = keras.Input(shape=(bins,), name="spectrum_b")
    score = keras.layers.Dot(axes=1, normalize=True, name="similarity")([embedder(a), embedder(b)])
    return keras.Model([a, b], score, name="siamese_similarity")

"""Tiny Keras models a user might bring to `zooserve export` (a penguin-like classifier, a CNN
on 8x8 shape images, layers of their own), and the data they are trained and tested on."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
CENTRES = np.array([[39, 18.3, 190, 3700], [49, 18.4, 196, 3730], [47, 15, 217, 5080]])
SPREAD = np.array([2.5, 1.1, 6.5, 450])
SHAPES = ["square", "cross", "stripe"]

# Custom layers a user would keep in their own module, passed with --custom-objects.
CUSTOM_LAYERS = '''
import keras
import numpy as np
import tensorflow as tf


class Doubler(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


class NumpyClip(keras.layers.Layer):
    """Clips with NumPy inside the graph: ONNX has no operator for that."""

    def call(self, x):
        y = tf.numpy_function(lambda a: np.clip(a, -1, 1).astype("float32"), [x], tf.float32,
                              stateful=False)
        y.set_shape(x.shape)
        return y


class BatchCentre(keras.layers.Layer):
    """Subtracts the batch's mean: Keras predicts in batches of 32, the ONNX check runs
    all rows at once, so the two answer differently."""

    def call(self, x):
        return x - keras.ops.mean(x, axis=0, keepdims=True)
'''




def penguin_like(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    generator = np.random.default_rng(seed)
    classes = generator.integers(0, 3, rows)
    x = CENTRES[classes] + generator.normal(size=(rows, 4)) * SPREAD
    return x.astype("float32"), classes


def shape_images(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """8x8 grey images (0-255) of a square, a cross or a stripe, with noise."""
    generator = np.random.default_rng(seed)
    classes = generator.integers(0, 3, rows)
    patterns = np.zeros((3, 8, 8), dtype="float32")
    patterns[0, 2:6, 2:6] = 200
    patterns[1, 3:5, :] = patterns[1, :, 3:5] = 200
    patterns[2, :, 1:3] = 200
    x = patterns[classes] + generator.normal(0, 30, size=(rows, 8, 8))
    return np.clip(x, 0, 255).astype("float32")[..., None], classes


def build_classifier(keras, x: np.ndarray):
    inputs = keras.Input(shape=(4,), name="features")
    normalise = keras.layers.Normalization(name="normalization")
    normalise.adapt(x)
    hidden = keras.layers.Dense(10, activation="relu")(normalise(inputs))
    outputs = keras.layers.Dense(3, activation="softmax", name="probabilities")(hidden)
    return keras.Model(inputs, outputs)


def build_cnn(keras):
    inputs = keras.Input(shape=(8, 8, 1), name="image")
    x = keras.layers.Rescaling(1.0 / 255)(inputs)
    x = keras.layers.Conv2D(8, (3, 3), activation="relu")(x)
    x = keras.layers.MaxPooling2D((2, 2))(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs)


def fit(model, x, classes, epochs: int) -> None:
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x, classes, epochs=epochs, batch_size=32, verbose=0)


def save_three_ways(model, folder: Path, stem: str) -> dict[str, Path]:
    paths = {"keras": folder / f"{stem}.keras", "h5": folder / f"{stem}.h5"}
    model.save(paths["keras"])
    model.save(paths["h5"])
    paths["saved_model"] = folder / f"{stem}_savedmodel"
    model.export(paths["saved_model"], verbose=False)
    return paths

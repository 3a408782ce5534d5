"""The Normalization layer the tabular models (penguins, weather) put in front, so clients
send raw measurements and the exported ONNX file needs no preprocessing beside it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import keras


def normalization_layer(x_train: np.ndarray) -> keras.layers.Normalization:
    """A Normalization layer with the training split's mean and variance (what `adapt` does).

    A feature that is constant in the training split (no snow in a short subset) keeps
    variance 1, as scikit-learn's StandardScaler does: Keras would divide by 1e-7 and turn
    the first unseen value into a 1e7 input.
    """
    import keras

    x = np.asarray(x_train, dtype="float64")
    mean, variance = x.mean(axis=0), x.var(axis=0)
    variance[variance < 1e-12] = 1.0
    return keras.layers.Normalization(
        axis=-1, mean=mean.astype("float32"), variance=variance.astype("float32"),
        name="normalization",
    )  # fmt: skip

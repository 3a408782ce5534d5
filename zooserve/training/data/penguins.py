"""Palmer penguins (lesson episode 2): four body measurements -> species."""

from __future__ import annotations

import numpy as np

from zooserve.repository.layout import sha256_of_file
from zooserve.training.data.dataset import Dataset, packaged_file

PENGUIN_FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def load_penguins() -> Dataset:
    """Palmer penguins from the `palmerpenguins` wheel: 4 measurements -> species.

    The lesson's preparation: drop rows with missing values, species as the target,
    stratified 80/20 split with random_state 0 (fixed whatever --seed says: the shipped
    card's test set is this split). Labels in alphabetical order.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    path = packaged_file("palmerpenguins", "data/penguins.csv")
    frame = pd.read_csv(path).dropna(subset=[*PENGUIN_FEATURES, "species"])
    labels = sorted(frame["species"].unique())
    x = frame[PENGUIN_FEATURES].to_numpy(dtype="float32")
    y = np.eye(len(labels), dtype="float32")[frame["species"].map(labels.index).to_numpy()]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, shuffle=True, stratify=y
    )
    return Dataset(
        name="palmerpenguins",
        source="palmerpenguins wheel, data/penguins.csv (Horst, Hill & Gorman 2020)",
        sha256=sha256_of_file(path),
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        split="stratified 80/20, random_state=0, rows with missing values dropped",
        feature_names=list(PENGUIN_FEATURES),
        labels=labels,
    )

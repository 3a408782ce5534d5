"""Penguins taken from the palmerpenguins data set, for checking served predictions."""

import numpy as np

FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
LABELS = ["Adelie", "Chinstrap", "Gentoo"]


def load_measured() -> tuple[np.ndarray, list[str]]:
    """Every penguin with all four measurements: (features FP32 [n,4], species)."""
    from palmerpenguins import load_penguins

    frame = load_penguins().dropna(subset=FEATURES + ["species"])
    return frame[FEATURES].to_numpy(np.float32), frame["species"].tolist()


def one_of_each() -> tuple[np.ndarray, list[str]]:
    """The first penguin of each species in the data set."""
    features, species = load_measured()
    rows = [species.index(name) for name in LABELS]
    return features[rows], [species[i] for i in rows]

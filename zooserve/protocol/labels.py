"""A classifier's answer in words: per row, the most likely label and every label's
probability, read from the output that has one value per label (`probabilities` when there
is one). Used by the BentoML `predict` API and by `zooserve predict`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelledRow:
    label: str
    probability: float
    probabilities: dict[str, float]


def labelled_output(
    labels: Sequence[str], outputs: Mapping[str, np.ndarray]
) -> tuple[str, list[LabelledRow]] | None:
    """The name of the output that scores each label, and its rows in labels; None when no
    output has one value per label."""
    ordered = sorted(outputs.items(), key=lambda item: item[0] != "probabilities")
    for name, array in ordered:
        if array.ndim in (1, 2) and array.shape[-1] == len(labels) and array.dtype.kind == "f":
            rows = array.reshape(-1, len(labels)).astype(float)
            return name, [
                LabelledRow(
                    label=labels[int(np.argmax(row))],
                    probability=float(np.max(row)),
                    probabilities=dict(zip(labels, row.tolist(), strict=True)),
                )
                for row in rows
            ]
    return None

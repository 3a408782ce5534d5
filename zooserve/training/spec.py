"""What a recipe declares (`ModelSpec`) and the shapes of the functions it hands over.

Light on purpose: numpy and dataclasses only, so the CLI and the data-only tests can import
recipes without TensorFlow; Keras appears in type hints only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from zooserve.training.data.dataset import Arrays, Dataset
from zooserve.training.fitting import FitSettings

if TYPE_CHECKING:
    import keras


@dataclass(frozen=True)
class TrainOptions:
    """What the user chose on the command line."""

    models: Path = Path("models")
    ledger: Path = Path("results/ledger.csv")
    overwrite: bool = False
    epochs: int | None = None  # cap on epochs (quick runs)
    subset: int | None = None  # first N train and test samples (quick runs)
    data: str | None = None  # the lesson's real data files, where a recipe takes them
    weights: str | None = None  # a local Keras weights file (transfer learning)
    seed: int = 0
    verbose: bool = False  # Keras's per-epoch lines, model summaries, TensorFlow's logs
    # An EC private key (PEM): each version is signed in its staging folder, before it is
    # published (zooserve.repository.signing); None: unsigned.
    sign_key: Path | None = None


@dataclass(frozen=True)
class CardText:
    """What the card says the model does and takes, in words; it depends on the data loaded
    (digits with the default data, household objects with Dollar Street's)."""

    description: str
    inputs: dict[str, str]  # served input tensor name -> description, in model order
    output: tuple[str, str]  # served output tensor name, description
    # How peak lists become the input vector (spectra models): `zooserve.spectra.binning.Binning`'s
    # settings, written to the card and the ONNX metadata under `input_binning`.
    input_binning: dict | None = None


@dataclass(frozen=True)
class Companion:
    """A second model shipped from the same training run (the siamese net's embedder)."""

    name: str  # the model it ships as; its spec gives task, tolerance and card text
    model: keras.Model
    x_test: Arrays  # inputs for its parity check
    y_true: np.ndarray  # for its metrics and plot
    y_score: np.ndarray
    metrics: dict[str, float]


class LoadData(Protocol):
    def __call__(self, options: TrainOptions) -> Dataset: ...


class DescribeModel(Protocol):
    def __call__(self, dataset: Dataset) -> CardText: ...


class BuildModel(Protocol):
    """Returns the Keras model, uncompiled (fitting compiles it); may add entries to the
    card's `training` section through `notes` (the transfer base's provenance, the target)."""

    def __call__(
        self, dataset: Dataset, options: TrainOptions, notes: dict[str, object]
    ) -> keras.Model: ...


class ScoreBaselines(Protocol):
    """{baseline name: test metrics}, scored on the same test split as the model."""

    def __call__(
        self, dataset: Dataset, options: TrainOptions, settings: FitSettings
    ) -> dict[str, dict[str, float]]: ...


class ShipCompanions(Protocol):
    def __call__(self, model: keras.Model, dataset: Dataset) -> list[Companion]: ...


@dataclass(frozen=True)
class ModelSpec:
    """One servable model: how to get its data, build and fit it, and describe it."""

    name: str
    task: str  # classification | regression | similarity | embedding
    primary_metric: str
    higher_is_better: bool
    tolerance: str  # how closely a rerun reproduces the shipped card
    describe: DescribeModel
    load: LoadData | None = None  # None: shipped by another model's run (trained_by)
    build: BuildModel | None = None
    fit: FitSettings | None = None
    baselines: ScoreBaselines | None = None
    companions: ShipCompanions | None = None
    trained_by: str | None = None  # this model is shipped by another entry's training run

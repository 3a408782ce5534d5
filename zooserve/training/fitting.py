"""Compile, fit and evaluate: the lesson's loop, with fixed seeds and printed results."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from zooserve.training.data.dataset import Arrays, Dataset


@dataclass(frozen=True)
class FitSettings:
    """Everything that decides how a model is trained; recorded in the card as is."""

    epochs: int
    batch_size: int
    loss: str
    metrics: tuple[str, ...]
    optimizer: str = "adam"
    learning_rate: float = 1e-3
    validation_fraction: float = 0.2  # Keras takes it from the end of the (shuffled) train split
    early_stopping_patience: int | None = None  # EarlyStopping on val_loss when set
    seed: int = 0

    def capped(self, epochs: int | None) -> FitSettings:
        """These settings with at most `epochs` epochs (`--epochs`, for quick runs)."""
        return replace(self, epochs=min(self.epochs, epochs)) if epochs else self

    def describe(self, epochs_run: int) -> dict:
        return {
            "epochs_run": epochs_run,
            "epochs_max": self.epochs,
            "batch_size": self.batch_size,
            "optimizer": f"{self.optimizer} (learning_rate={self.learning_rate})",
            "loss": self.loss,
            "metrics": list(self.metrics),
            "validation": f"last {self.validation_fraction:.0%} of the training split",
            "early_stopping": (
                f"val_loss, patience {self.early_stopping_patience}, best weights restored"
                if self.early_stopping_patience
                else None
            ),
            "seed": self.seed,
        }


def set_seeds(seed: int) -> None:
    """Python, NumPy and TensorFlow seeds, and TensorFlow's deterministic kernels."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _metric(name: str):
    import keras

    return keras.metrics.RootMeanSquaredError(name="rmse") if name == "rmse" else name


def fit(
    model, x: Arrays, y: np.ndarray, settings: FitSettings, label: str, verbose: bool = False
) -> tuple[dict, int, float]:
    """Compile and fit: Keras's line per epoch when `verbose`, else one progress line
    headed `label`.

    Returns the per-epoch history, the number of epochs run and the fit time in seconds.
    """
    import keras

    from zooserve.training.progress import EpochProgress

    optimizer = keras.optimizers.get(
        {"class_name": settings.optimizer, "config": {"learning_rate": settings.learning_rate}}
    )
    model.compile(
        optimizer=optimizer, loss=settings.loss, metrics=[_metric(m) for m in settings.metrics]
    )
    callbacks = []
    if settings.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=settings.early_stopping_patience,
                restore_best_weights=True,
            )
        )
    if not verbose:
        callbacks.append(EpochProgress(label, settings.epochs, f"val_{settings.metrics[0]}"))
    started = time.perf_counter()
    history = model.fit(
        list(x) if isinstance(x, tuple) else x,
        y,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        validation_split=settings.validation_fraction,
        callbacks=callbacks,
        verbose=2 if verbose else 0,
    )
    seconds = time.perf_counter() - started
    return history.history, len(history.epoch), seconds


def predict(model, x: Arrays) -> np.ndarray:
    return np.asarray(model.predict(list(x) if isinstance(x, tuple) else x, verbose=0))


def score(task: str, y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Test metrics computed from predictions, the same way for Keras and ONNX outputs."""
    if task == "classification":
        eps = 1e-7
        cross_entropy = -np.mean(np.sum(y_true * np.log(np.clip(y_pred, eps, 1.0)), axis=1))
        accuracy = np.mean(y_true.argmax(axis=1) == y_pred.argmax(axis=1))
        return {"accuracy": round(float(accuracy), 4), "loss": round(float(cross_entropy), 4)}
    error = y_pred.reshape(-1) - y_true.reshape(-1)
    return {
        "rmse": round(float(np.sqrt(np.mean(error**2))), 4),
        "mae": round(float(np.mean(np.abs(error))), 4),
    }


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    matrix = np.zeros((classes, classes), dtype=int)
    np.add.at(matrix, (y_true.argmax(axis=1), y_pred.argmax(axis=1)), 1)
    return matrix


def report(
    name: str, task: str, dataset: Dataset, y_pred: np.ndarray, metrics: dict,
    show_confusion: bool = True,
) -> None:  # fmt: skip
    """Print the test metrics, and with `show_confusion` a classifier's confusion matrix."""
    shown = ", ".join(f"{k}={v}" for k, v in metrics.items())
    print(f"\n{name}: test set of {dataset.test_rows} ({dataset.name}): {shown}")
    if not show_confusion or task != "classification" or not dataset.labels:
        return
    matrix = confusion(dataset.y_test, y_pred, len(dataset.labels))
    width = 1 + max(8, *(len(label) for label in dataset.labels))
    print("confusion matrix (rows: true, columns: predicted)")
    print(" " * width + "".join(f"{label:>{width}}" for label in dataset.labels))
    for label, row in zip(dataset.labels, matrix, strict=True):
        print(f"{label:>{width}}" + "".join(f"{count:>{width}}" for count in row))

"""Training plots, PNG next to the card: curves, confusion matrix, predicted vs true."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and in CI

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 80  # small files: they are committed next to the model


def training_curves(history: dict[str, list[float]], path: Path, title: str) -> Path:
    """Loss and each metric per epoch, training vs validation, one panel each."""
    metrics = [key for key in history if not key.startswith("val_")]
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.5), squeeze=False)
    for axis, metric in zip(axes[0], metrics, strict=True):
        epochs = np.arange(1, len(history[metric]) + 1)
        axis.plot(epochs, history[metric], label="training")
        if f"val_{metric}" in history:
            axis.plot(epochs, history[f"val_{metric}"], label="validation")
        axis.set_xlabel("epoch")
        axis.set_ylabel(metric)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def confusion_matrix(matrix: np.ndarray, labels: list[str], path: Path, title: str) -> Path:
    size = 2.5 + 0.45 * len(labels)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (row, column), count in np.ndenumerate(matrix):
        color = "white" if count > threshold else "black"
        axis.text(column, row, str(count), ha="center", va="center", color=color, fontsize=8)
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path


def predicted_vs_true(y_true: np.ndarray, y_pred: np.ndarray, path: Path, title: str) -> Path:
    """Scatter of predictions against the truth, with the diagonal a perfect model hits."""
    figure, axis = plt.subplots(figsize=(4.5, 4.5))
    axis.scatter(y_true.reshape(-1), y_pred.reshape(-1), s=6, alpha=0.5)
    low = float(min(y_true.min(), y_pred.min())) if y_true.size else 0.0
    high = float(max(y_true.max(), y_pred.max())) if y_true.size else 1.0
    axis.plot([low, high], [low, high], color="grey", linewidth=1)
    axis.set_xlabel("true")
    axis.set_ylabel("predicted")
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    plt.close(figure)
    return path

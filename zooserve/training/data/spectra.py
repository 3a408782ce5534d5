"""Mass spectra pairs scored by the Tanimoto similarity of their molecules (the lesson's
outlook: MS2DeepScore): simulated offline, or an MGF file with its scores via `--data`.

Both loaders put the test molecules' spectra in `extras["test_spectra"]` (the embedding
model's parity check) and take a `seed` for every random choice they make.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from zooserve.repository.layout import sha256_of_file
from zooserve.spectra.binning import ZOO_BINNING, PeakProblem, bin_peaks
from zooserve.spectra.mgf import Spectrum, read_mgf
from zooserve.spectra.simulator import simulate_molecules
from zooserve.training.data.dataset import Dataset, require_file

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
    """Binned spectra of simulated molecules (`zooserve/spectra/simulator.py`, the zoo's spectrum
    simulator), paired by the Tanimoto score of their fingerprints. Test pairs use only
    molecules never seen in training. `extras["test_spectra"]` holds the test molecules'
    spectra (for the embedding model's parity check).
    """
    rng = np.random.default_rng(seed)
    simulated = simulate_molecules(rng, molecules, bits, bins)
    spectra, fingerprints, family_of = (
        simulated.spectra, simulated.fingerprints, simulated.family_of)
    families = int(family_of.max()) + 1

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
            f"seed {seed} (zooserve/training/data/spectra.py load_synthetic_spectra)"
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


def read_peaks(path: Path) -> dict[str, Spectrum]:
    """The spectra of an MGF file that the binning contract accepts, keyed by their id
    (TITLE, else SPECTRUMID, ...); those with too few peaks are left out."""
    kept = {}
    for spectrum in read_mgf(path):
        try:
            bin_peaks(spectrum.mz, spectrum.intensity, ZOO_BINNING)
        except PeakProblem:
            continue
        kept[spectrum.id] = spectrum
    return kept


def load_spectra_files(path: str | Path, seed: int = 0) -> Dataset:
    """Real spectra: an MGF file plus `<same name>.json` with Tanimoto scores.

    The JSON holds either `{"ids": [...], "scores": [[...]]}` (a square matrix in the order
    of `ids`, which name MGF spectra by TITLE) or a list of `{"a": id, "b": id, "score": s}`.
    Spectra are binned by the zoo's contract (`zooserve/spectra/binning.py`; those with fewer peaks
    than it needs are left out). Pairs are split 80/20 by spectrum: test pairs use spectra
    never seen in training, the held-out spectra drawn with `seed`.
    """
    path = require_file(Path(path), "MGF spectra file", MGF_WHERE)
    scores_path = require_file(path.with_suffix(".json"), "Tanimoto scores JSON", MGF_WHERE)
    peaks = read_peaks(path)
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
    vectors = {n: bin_peaks(peaks[n].mz, peaks[n].intensity, ZOO_BINNING) for n in names}
    bins = ZOO_BINNING.bins

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

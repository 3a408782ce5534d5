"""The zoo's spectrum simulator: molecules as fingerprints in families, spectra as the peaks
their substructures make. The spectra models were trained on its output
(`zooserve/training/data/spectra.py`); synthetic libraries of any size come from the same chemistry,
so the shipped embedding model knows them.

Each fingerprint bit stands for a substructure that makes three fragment peaks at fixed m/z
bins ("the chemistry"); a molecule's spectrum is the sum of its bits' peaks with random
intensities and a little noise, scaled to a maximum of 1. Molecules come in families of
eight (a parent with a few bits flipped per child), so similarities cover 0..1."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from zooserve.spectra.binning import ZOO_BINNING, Binning
from zooserve.spectra.mgf import Spectrum

FAMILY_SIZE = 8
PEAKS_PER_BIT = 3
# CH2: the mass that most often tells a molecule from its homologue.
METHYLENE = 14.01565


@dataclass(frozen=True)
class Chemistry:
    """Which bins each substructure's peaks fall in, and how tall they are."""

    peak_bins: np.ndarray  # int [bits, PEAKS_PER_BIT]
    peak_heights: np.ndarray  # float [bits, PEAKS_PER_BIT]


@dataclass(frozen=True)
class Molecules:
    fingerprints: np.ndarray  # bool [molecules, bits]
    family_of: np.ndarray  # int [molecules]
    spectra: np.ndarray  # float32 [molecules, bins], binned, max 1
    chemistry: Chemistry


def simulate_molecules(
    rng: np.random.Generator, molecules: int, bits: int = 128, bins: int = 200,
    chemistry: Chemistry | None = None,
) -> Molecules:
    """`molecules` molecules and their binned spectra. Without `chemistry` a new one is drawn
    (after the fingerprints, so the training data's random sequence stays as it was)."""
    families = max(1, -(-molecules // FAMILY_SIZE))
    parents = rng.random((families, bits)) < rng.uniform(0.08, 0.3, size=(families, 1))
    family_of = np.repeat(np.arange(families), FAMILY_SIZE)[:molecules]
    flips = rng.random((molecules, bits)) < rng.uniform(0.0, 0.15, size=(molecules, 1))
    fingerprints = np.logical_xor(parents[family_of], flips)
    if chemistry is None:
        chemistry = Chemistry(
            rng.integers(0, bins, size=(bits, PEAKS_PER_BIT)),
            rng.uniform(0.2, 1.0, size=(bits, PEAKS_PER_BIT)),
        )
    spectra = np.zeros((molecules, bins), dtype="float64")
    for bit in range(bits):
        carriers = np.flatnonzero(fingerprints[:, bit])
        jitter = rng.uniform(0.7, 1.3, size=(len(carriers), PEAKS_PER_BIT))
        for k in range(PEAKS_PER_BIT):
            spectra[carriers, chemistry.peak_bins[bit, k]] += (
                chemistry.peak_heights[bit, k] * jitter[:, k])
    spectra += rng.random(spectra.shape) * 0.05 * (rng.random(spectra.shape) < 0.05)
    spectra /= np.maximum(spectra.max(axis=1, keepdims=True), 1e-9)
    return Molecules(fingerprints, family_of, spectra.astype("float32"), chemistry)


@functools.cache
def zoo_chemistry() -> Chemistry:
    """The chemistry the shipped spectra models were trained on: the one
    `zooserve/training/data/spectra.py` draws with its defaults (1200 molecules, 128 bits, 200 bins,
    seed 0)."""
    return simulate_molecules(np.random.default_rng(0), 1200).chemistry


def simulate_library(
    count: int, seed: int = 1, binning: Binning = ZOO_BINNING, chunk: int = 20_000,
    prefix: str = "synthetic",
) -> Iterator[Spectrum]:
    """`count` library spectra as peak lists, made `chunk` molecules at a time (so a library
    of millions never sits in memory). Each nonzero bin of a simulated spectrum becomes one
    peak at a random m/z inside that bin with intensity = value² (the contract takes square
    roots), so binning the peaks gives back the simulated vector, up to the rounding of the
    MGF text. Precursor m/z: a family's mass, shifted by whole CH2 units per child."""
    chemistry = zoo_chemistry()
    bins = chemistry.peak_bins.max() + 1
    if bins > binning.bins:
        raise ValueError(f"the zoo's chemistry needs {bins} bins, the binning has {binning.bins}")
    made = 0
    for part in range(-(-count // chunk)):
        rng = np.random.default_rng([seed, part])
        size = min(chunk, count - made)
        molecules = simulate_molecules(rng, size, chemistry=chemistry, bins=binning.bins)
        family_mass = rng.uniform(150.0, 900.0, size=molecules.family_of.max() + 1)
        shifts = rng.integers(-3, 4, size=size) * METHYLENE
        precursors = family_mass[molecules.family_of] + shifts + rng.normal(0, 0.002, size)
        for row in range(size):
            number = made + row
            spectrum = _peaks_of(molecules.spectra[row], rng, binning)
            spectrum.number = number
            spectrum.fields = {
                "TITLE": f"{prefix}-{number:07d}",
                "PEPMASS": f"{precursors[row]:.4f}",
                "CHARGE": "1+",
                "NAME": f"synthetic molecule {number} (family {part}-{molecules.family_of[row]})",
            }
            yield spectrum
        made += size


def _peaks_of(vector: np.ndarray, rng: np.random.Generator, binning: Binning) -> Spectrum:
    columns = np.flatnonzero(vector > 0)
    inside = rng.uniform(0.05, 0.95, size=columns.size)
    mz = binning.mz_min + (columns + inside) * binning.bin_width
    intensity = np.square(vector[columns].astype(np.float64)) * 1000.0
    return Spectrum(mz.astype(np.float32), intensity.astype(np.float32))


def noisy_copy(
    spectrum: Spectrum, rng: np.random.Generator, intensity_noise: float = 0.2,
    mz_noise: float = 0.002, extra_peaks: int = 3, binning: Binning = ZOO_BINNING,
) -> Spectrum:
    """A second measurement of the same compound, as a query: every intensity scaled by a
    random factor within ±`intensity_noise`, m/z shifted by N(0, `mz_noise`), half of the
    peaks under 2% of the base peak lost, `extra_peaks` noise peaks of 1-3% added."""
    mz = spectrum.mz.astype(np.float64) + rng.normal(0, mz_noise, spectrum.mz.size)
    intensity = spectrum.intensity.astype(np.float64)
    intensity = intensity * rng.uniform(1 - intensity_noise, 1 + intensity_noise, mz.size)
    base = intensity.max() if intensity.size else 1.0
    kept = (intensity >= 0.02 * base) | (rng.random(mz.size) < 0.5)
    mz, intensity = mz[kept], intensity[kept]
    noise_mz = rng.uniform(binning.mz_min, binning.mz_max, extra_peaks)
    noise = rng.uniform(0.01, 0.03, extra_peaks) * base
    order = np.argsort(np.concatenate([mz, noise_mz]), kind="stable")
    mz = np.concatenate([mz, noise_mz])[order].clip(min=0)
    intensity = np.concatenate([intensity, noise])[order]
    fields = {k: v for k, v in spectrum.fields.items() if k in ("CHARGE",)}
    fields["TITLE"] = f"query-{spectrum.id}"
    fields["ORIGINAL"] = spectrum.id
    if spectrum.precursor_mz is not None:
        fields["PEPMASS"] = f"{spectrum.precursor_mz + rng.normal(0, 0.002):.4f}"
    return Spectrum(mz.astype(np.float32), intensity.astype(np.float32), fields,
                    spectrum.number)

"""The binning contract: how a peak list (m/z, intensity) becomes a spectra model's input
vector. Training bins its spectra with `bin_peaks`, the server bins raw-peak queries with
`bin_padded`, the client may bin before sending: one function underneath, so the three agree
to the bit. The settings travel with the model, in its card (`input_binning`) and in its
ONNX metadata under the same key.

The steps, in order:
1. Peaks are read as float32 (the wire's type), so a query binned by the client and one
   binned by the server from the same numbers fall in the same bins.
2. Negative or non-finite m/z or intensity, or m/z and intensity of different lengths, are
   refused (`PeakProblem`), never cleaned away silently.
3. Cleaning: a peak's bin is floor((m/z - mz_min) / bin_width) in float64; peaks whose bin
   is outside 0..bins-1 (m/z outside [mz_min, mz_max), up to that rounding) and peaks of
   intensity 0 are dropped; fewer than `min_peaks` left is refused (too little to compare).
4. Each peak's intensity is scaled (`sqrt`, as MS2DeepScore), peaks sharing a bin keep the
   largest (`max`), and the vector is divided by its largest value (max 1).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np

# The key of the contract in a model's card and in its ONNX metadata.
METADATA_KEY = "input_binning"


class PeakProblem(ValueError):
    """A peak list the contract cannot bin; `row` is the spectrum's place in its batch."""

    def __init__(self, row: int, message: str) -> None:
        super().__init__(message)
        self.row = row


@dataclass(frozen=True)
class Binning:
    mz_min: float = 10.0
    mz_max: float = 1000.0
    bins: int = 200
    intensity_scaling: str = "sqrt"
    aggregation: str = "max"
    normalisation: str = "max"
    min_peaks: int = 5

    def __post_init__(self) -> None:
        known = (("intensity_scaling", "sqrt"), ("aggregation", "max"), ("normalisation", "max"))
        for name, value in known:
            if getattr(self, name) != value:
                raise ValueError(f"binning {name} {getattr(self, name)!r} is not supported "
                                 f"(only {value!r})")
        if not (0 <= self.mz_min < self.mz_max) or self.bins < 1 or self.min_peaks < 1:
            raise ValueError(f"binning settings out of range: {self.to_dict()}")

    @property
    def bin_width(self) -> float:
        return (self.mz_max - self.mz_min) / self.bins

    def to_dict(self) -> dict:
        return {**asdict(self), "bin_width": self.bin_width}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping) -> Binning:
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**fields)

    def describe(self) -> str:
        return (f"{self.bins} bins of {self.bin_width:g} m/z from {self.mz_min:g} to "
                f"{self.mz_max:g}, {self.intensity_scaling} intensities, {self.aggregation} per "
                f"bin, scaled to max 1, at least {self.min_peaks} peaks")


# The contract the zoo's spectra models were trained with.
ZOO_BINNING = Binning()


def pad_peaks(spectra) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Peak lists (`zooserve.spectra.mgf.Spectrum`s, or (m/z, intensity) pairs of equal length) the
    way a request carries them, and `bin_padded` takes them: m/z and intensity zero-padded to
    the longest list (at least one column), float32 [B, P], and each list's length, n_peaks
    int32 [B]."""
    lists = [(s.mz, s.intensity) if hasattr(s, "mz") else s for s in spectra]
    width = max([1, *(len(mz) for mz, _ in lists)])
    mz = np.zeros((len(lists), width), np.float32)
    intensity = np.zeros_like(mz)
    for row, (peaks, heights) in enumerate(lists):
        mz[row, : len(peaks)] = peaks
        intensity[row, : len(heights)] = heights
    return mz, intensity, np.array([len(peaks) for peaks, _ in lists], np.int32)


def bin_peaks(mz, intensity, binning: Binning = ZOO_BINNING) -> np.ndarray:
    """One spectrum's peaks -> its float32 input vector [bins]."""
    mz = np.asarray(mz, dtype=np.float32).reshape(-1)
    intensity = np.asarray(intensity, dtype=np.float32).reshape(-1)
    if mz.shape != intensity.shape:
        raise PeakProblem(0, f"{mz.size} m/z values but {intensity.size} intensities: "
                             "every peak needs both")
    return bin_padded(mz[None, :], intensity[None, :], np.array([mz.size]), binning)[0]


def bin_padded(
    mz: np.ndarray, intensity: np.ndarray, n_peaks: np.ndarray, binning: Binning = ZOO_BINNING
) -> np.ndarray:
    """A batch of zero-padded peak lists (m/z and intensity [B, P], the peaks each row really
    has in `n_peaks` [B]) -> float32 input vectors [B, bins]. Padding past `n_peaks` is
    ignored, whatever it holds. Raises PeakProblem naming the first row at fault."""
    mz = np.asarray(mz, dtype=np.float32)
    intensity = np.asarray(intensity, dtype=np.float32)
    n_peaks = np.asarray(n_peaks).reshape(-1)
    if mz.ndim != 2 or mz.shape != intensity.shape:
        raise PeakProblem(0, f"m/z shape {list(mz.shape)} and intensity shape "
                             f"{list(intensity.shape)} differ; both must be [spectra, peaks]")
    rows, width = mz.shape
    if n_peaks.shape != (rows,):
        raise PeakProblem(0, f"n_peaks has {n_peaks.size} values for {rows} spectra")
    for row in np.flatnonzero((n_peaks < 0) | (n_peaks > width)):
        raise PeakProblem(int(row), f"spectrum {row}: n_peaks {int(n_peaks[row])} is outside "
                                    f"0..{width} (the padded peak lists' length)")
    present = np.arange(width)[None, :] < n_peaks[:, None]
    _refuse(present & ~(np.isfinite(mz) & np.isfinite(intensity)), "a non-finite m/z or "
            "intensity (NaN or infinity)")
    _refuse(present & ((mz < 0) | (intensity < 0)), "a negative m/z or intensity")
    position = mz.astype(np.float64) - binning.mz_min
    index = np.floor_divide(position, binning.bin_width, where=present,
                            out=np.full(mz.shape, -1.0))
    kept = present & (index >= 0) & (index < binning.bins) & (intensity > 0)
    counts = kept.sum(axis=1)
    for row in np.flatnonzero(counts < binning.min_peaks):
        raise PeakProblem(int(row), (
            f"spectrum {row} has {int(counts[row])} peaks with intensity above 0 in m/z "
            f"{binning.mz_min:g}..{binning.mz_max:g} (of {int(n_peaks[row])} given); the "
            f"model's binning needs at least {binning.min_peaks}"))
    row_of, column = np.nonzero(kept)
    vectors = np.zeros((rows, binning.bins), dtype=np.float64)
    scaled = np.sqrt(intensity[row_of, column].astype(np.float64))
    np.maximum.at(vectors, (row_of, index[row_of, column].astype(np.intp)), scaled)
    top = vectors.max(axis=1, keepdims=True)
    return (vectors / np.where(top > 0, top, 1.0)).astype(np.float32)


def _refuse(bad: np.ndarray, what: str) -> None:
    rows, columns = np.nonzero(bad)
    if rows.size:
        raise PeakProblem(int(rows[0]), f"spectrum {rows[0]}, peak {columns[0]}: {what}")

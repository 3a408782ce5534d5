"""The peak-list contract of a library search, read once for every side that speaks it: a
query spectrum as it comes (m/z values, intensities, an optional precursor m/z and id) checked
and made float32, and a library's answer (ids, scores and metadata per query) read back as
matches. The client (`zooserve.Client.search`) and the Bento's `POST /search` both wrap these;
only how they name a spectrum differs ("query 3 ('scan-17')" or "spectra[3]").

Rules of a peak list (the binning contract's, zooserve.spectra.binning, checked before a
request is sent so a mistake names the field): m/z values and intensities are flat lists of
numbers of the same length, each finite and within float32's range, none negative (m/z need
not be sorted); precursor_mz is a positive m/z or absent; id is a string or an integer. How
many peaks a spectrum needs is the library's binning, judged by the server.

numpy only: training, the server and the client all import this."""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# The fields a query spectrum has (a dict in the client's hands, a JSON object in the Bento's).
SPECTRUM_FIELDS = ("mz", "intensity", "precursor_mz", "id")
FLOAT32_MAX = float(np.finfo(np.float32).max)


class PeakListError(ValueError):
    """A peak list that breaks the contract: `fields` are the spectrum's fields at fault
    ("mz", "intensity[3]", "precursor_mz", "id"; both lists when their lengths differ),
    `problem` says what is wrong with them. Each caller says which spectrum (`at`)."""

    def __init__(self, fields: tuple[str, ...], problem: str) -> None:
        super().__init__(f"{' and '.join(fields)}: {problem}")
        self.fields = fields
        self.problem = problem

    def at(self, spectrum: str, path: bool = False) -> str:
        """The message for the spectrum named `spectrum`. path=True: each field as a path
        under it, as a JSON body names them ("spectra[2].mz and spectra[2].intensity: ...");
        otherwise the spectrum, then the field when the problem is one field's
        ("query 2 ('x'): intensity[3]: ...")."""
        if path:
            return " and ".join(f"{spectrum}.{field}" for field in self.fields) \
                + f": {self.problem}"
        if len(self.fields) == 1:
            return f"{spectrum}: {self.fields[0]}: {self.problem}"
        return f"{spectrum}: {self.problem}"


@dataclass(frozen=True)
class PeakList:
    """A checked query spectrum."""

    mz: np.ndarray  # float32 [peaks]
    intensity: np.ndarray  # float32 [peaks]
    precursor_mz: float  # NaN: none
    id: str | int | None


def parse_peak_list(
    mz: object, intensity: object, precursor_mz: object = None, id: object = None,
    max_id_length: int | None = None,
) -> PeakList:
    """One query spectrum checked against the contract (see the module's note). `mz` and
    `intensity`: lists, tuples or 1-D arrays of numbers; `precursor_mz`: a number or None;
    `id`: a string, an integer or None, at most `max_id_length` characters when given.
    Raises PeakListError naming the field."""
    for field, value in (("mz", mz), ("intensity", intensity)):
        if value is None:
            raise PeakListError((field,), "required: a list of numbers")
    mz_values = _numbers("mz", mz)
    intensity_values = _numbers("intensity", intensity)
    if mz_values.size != intensity_values.size:
        raise PeakListError(("mz", "intensity"), f"{mz_values.size} m/z values but "
                            f"{intensity_values.size} intensities")
    _not_negative("mz", mz, mz_values)
    _not_negative("intensity", intensity, intensity_values)
    if precursor_mz is None:
        precursor = math.nan
    elif _is_number(precursor_mz) and 0 < precursor_mz < FLOAT32_MAX:
        precursor = float(precursor_mz)
    else:
        raise PeakListError(("precursor_mz",), f"{_shown(precursor_mz)} is not a positive m/z "
                            "(leave it out for none)")
    if id is not None and (isinstance(id, bool) or not isinstance(id, str | numbers.Integral)):
        raise PeakListError(("id",), "must be a string or an integer")
    if id is not None and max_id_length is not None and _length(id) > max_id_length:
        raise PeakListError(("id",), f"is longer than {max_id_length} characters")
    return PeakList(mz_values, intensity_values, precursor,
                    id if id is None or isinstance(id, str) else int(id))


def _numbers(field: str, values: object) -> np.ndarray:
    """A list of numbers as float32, every element a finite number float32 can hold."""
    if isinstance(values, np.ndarray):
        if values.ndim != 1:
            raise PeakListError((field,), "must be one flat list of numbers, not of shape "
                                f"{list(values.shape)}")
        if values.dtype.kind not in "fiu":
            values = values.tolist()
    elif not isinstance(values, list | tuple):
        raise PeakListError((field,), f"must be a list of numbers, got {kind(values)}")
    if isinstance(values, np.ndarray):
        with np.errstate(over="ignore"):
            array = values.astype(np.float32)
    else:
        if not set(map(type, values)) <= {int, float}:  # (a loop in C) then find the culprit
            place = next((place for place, value in enumerate(values)
                          if not _is_number(value)), None)
            if place is not None:  # (numpy's scalars are numbers too)
                raise PeakListError((f"{field}[{place}]",),
                                    f"not a number ({kind(values[place])})")
        with np.errstate(over="ignore"):
            try:
                array = np.array(values, dtype=np.float64).astype(np.float32)
            except OverflowError:  # an integer beyond a double's range
                array = np.array([math.inf if abs(v) > 1e308 else v for v in values],
                                 dtype=np.float64).astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        place = int(bad[0])
        raise PeakListError((f"{field}[{place}]",), f"{_shown(values[place])} is not a finite "
                            "number an FP32 can hold (NaN, Infinity and numbers beyond about "
                            "3.4e38 are refused)")
    return array


def _not_negative(field: str, values: object, array: np.ndarray) -> None:
    bad = np.flatnonzero(array < 0)
    if bad.size:
        place = int(bad[0])
        raise PeakListError((f"{field}[{place}]",), f"{_shown(values[place])} is negative; "
                            f"{'m/z values' if field == 'mz' else 'intensities'} are 0 or more")


def _length(id: str | numbers.Integral) -> float:
    """An id's characters; an integer too long to write out (str() refuses beyond 4300
    digits) is counted as too long for any limit."""
    if isinstance(id, str):
        return len(id)
    return len(str(int(id))) if int(id).bit_length() < 10_000 else math.inf


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool | np.bool_)


def kind(value: object) -> str:
    """What a value is, in JSON's words where it is one of JSON's ("a string", "null", ...;
    never the value itself: a client's text is not echoed)."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             type(None): "null"}
    if type(value) in names:
        return names[type(value)]
    return "a number" if _is_number(value) else f"a {type(value).__name__}"


def _shown(value: object) -> str:
    """A number as a message shows it (an integer too long to read usefully is described);
    anything else by its kind."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(value) if abs(int(value)) < 10**20 else "an integer beyond float32's range"
    if _is_number(value):
        return repr(float(value))
    return kind(value)


# The answer side


def read_matches(ids: np.ndarray, scores: np.ndarray, metadata: np.ndarray,
                 rows: int) -> list[list[tuple[str, float, dict]]]:
    """A library's answer ([queries, k] ids as bytes, scores, metadata as JSON bytes) as each
    query's matches, best first, as (id, score, metadata: the entry's fields, `id` and
    `precursor_mz` among them); the padding columns (id "") are left out. Raises ValueError
    for an answer of the wrong shape, or ids or metadata that are not UTF-8 or JSON."""
    if ids.ndim != 2 or len(ids) != rows or scores.shape != ids.shape \
            or metadata.shape != ids.shape:
        raise ValueError(f"ids {list(ids.shape)}, scores {list(scores.shape)} and metadata "
                         f"{list(metadata.shape)} for {rows} queries")
    return [[(bytes(ids[row, column]).decode(), float(scores[row, column]),
              json.loads(metadata[row, column]))
             for column in range(ids.shape[1]) if len(ids[row, column])]
            for row in range(rows)]


def padded_width(lists: Sequence[PeakList]) -> int:
    """The columns the lists take once zero-padded to the longest (at least one)."""
    return max([1, *(len(peaks.mz) for peaks in lists)])

"""MGF (Mascot Generic Format) files: `BEGIN IONS`, `KEY=value` header lines, one
`m/z intensity` line per peak, `END IONS`. Read as a stream, so a library of a million
spectra never sits in memory at once; `.gz` files are read and written compressed."""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

# Header fields that name a spectrum, in the order they are preferred.
ID_FIELDS = ("TITLE", "SPECTRUMID", "SPECTRUM_ID", "SCANS", "INCHIKEY")


class MgfError(ValueError):
    """A file that is not MGF, with the line at fault."""


@dataclass
class Spectrum:
    mz: np.ndarray  # float32 [peaks]
    intensity: np.ndarray  # float32 [peaks]
    fields: dict[str, str] = field(default_factory=dict)  # header keys in upper case
    number: int = 0  # its place in its file, from 0

    @property
    def id(self) -> str:
        for name in ID_FIELDS:
            if self.fields.get(name):
                return self.fields[name]
        return f"spectrum_{self.number}"

    @property
    def precursor_mz(self) -> float | None:
        """PEPMASS's first number (MGF's precursor m/z), else PRECURSOR_MZ; None if neither."""
        for name in ("PEPMASS", "PRECURSOR_MZ"):
            text = self.fields.get(name, "").split()
            if text:
                try:
                    value = float(text[0])
                except ValueError:
                    continue
                if np.isfinite(value) and value > 0:
                    return value
        return None


def _open(path: Path, mode: str) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, mode + "t", encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def read_mgf(path: str | Path) -> Iterator[Spectrum]:
    """The spectra of an MGF file, one at a time, in file order."""
    path = Path(path)
    with _open(path, "r") as stream:
        yield from _parse(stream, str(path))


def _parse(lines: Iterable[str], where: str) -> Iterator[Spectrum]:
    number = 0
    fields: dict[str, str] | None = None
    peaks: list[tuple[float, float]] = []
    for line_number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line[0] in "#;!/":
            continue
        if line == "BEGIN IONS":
            if fields is not None:
                raise MgfError(f"{where}:{line_number}: BEGIN IONS inside a spectrum (no "
                               "END IONS before it)")
            fields, peaks = {}, []
        elif line == "END IONS":
            if fields is None:
                raise MgfError(f"{where}:{line_number}: END IONS without BEGIN IONS")
            array = np.asarray(peaks, dtype=np.float32).reshape(-1, 2)
            yield Spectrum(array[:, 0].copy(), array[:, 1].copy(), fields, number)
            number += 1
            fields = None
        elif fields is None:
            continue  # text between spectra (MGF allows global parameters): not ours
        elif "=" in line and not (line[0].isdigit() or line[0] in "+-."):
            key, _, value = line.partition("=")
            fields[key.strip().upper()] = value.strip()
        else:
            parts = line.split()
            try:
                peaks.append((float(parts[0]), float(parts[1]) if len(parts) > 1 else 1.0))
            except ValueError:
                raise MgfError(f"{where}:{line_number}: {line[:60]!r} is neither a "
                               "KEY=value line nor an 'm/z intensity' peak") from None
    if fields is not None:
        raise MgfError(f"{where}: the last spectrum has no END IONS (is the file cut short?)")


def write_mgf(path: str | Path, spectra: Iterable[Spectrum]) -> int:
    """Write spectra as MGF; returns how many."""
    path = Path(path)
    count = 0
    with _open(path, "w") as stream:
        for spectrum in spectra:
            stream.write("BEGIN IONS\n")
            for key, value in spectrum.fields.items():
                stream.write(f"{key}={value}\n")
            for mz, intensity in zip(spectrum.mz.tolist(), spectrum.intensity.tolist(),
                                     strict=True):
                stream.write(f"{mz:.9g} {intensity:.9g}\n")  # float32 exactly
            stream.write("END IONS\n\n")
            count += 1
    return count

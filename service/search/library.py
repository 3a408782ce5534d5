"""A spectral library bundle on disk: one version folder of the model repository,
`<models>/<name>/<version>/`, served as a search model.

    library.json          the manifest: format, count, dimension, the embedding model (name,
                          version, sha256) and binning it was built with, the search backend,
                          the source file, and the sha256 of every file below
    embeddings.npy        float32 [count, dimension], rows L2-normalised; opened memory-mapped
    precursor_mz.npy      float64 [count], NaN where the spectrum had none
    entries.jsonl         one JSON object per entry: id, precursor_mz and the MGF's fields
    entries.offsets.npy   int64 [count + 1], where each entry's line starts
    ann.faiss             (backend "ann" only) the HNSW index, with its measured recall
    card.json             the repository's card (task "search"), holding library.json's sha256

Nothing is read whole into memory: the embeddings and entries are memory-mapped, and a
match's metadata is decoded only when it is answered."""

from __future__ import annotations

import json
import mmap
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.layout import LIBRARY_FILE, sha256_of_file
from spectra.binning import Binning

FORMAT = "zooserve-spectral-library/1"
EMBEDDINGS_FILE = "embeddings.npy"
PRECURSORS_FILE = "precursor_mz.npy"
ENTRIES_FILE = "entries.jsonl"
OFFSETS_FILE = "entries.offsets.npy"
ANN_FILE = "ann.faiss"
BACKENDS = ("exact", "ann", "qdrant")


class LibraryError(ValueError):
    """A bundle that cannot be served as it is, with the reason."""


@dataclass(frozen=True)
class EmbeddingModelRef:
    name: str
    version: int
    sha256: str

    def describe(self) -> str:
        return f"'{self.name}' version {self.version} (sha256 {self.sha256[:16]}...)"


class Library:
    """An opened bundle: its manifest, and its arrays memory-mapped."""

    def __init__(self, folder: Path, manifest: dict) -> None:
        self.folder = folder
        self.manifest = manifest
        self.count = int(manifest["count"])
        self.dimension = int(manifest["dimension"])
        self.binning = Binning.from_dict(manifest["binning"])
        model = manifest["embedding_model"]
        self.embedding_model = EmbeddingModelRef(model["name"], int(model["version"]),
                                                 str(model["sha256"]).lower())
        self.backend = manifest.get("backend", {"kind": "exact"})
        self.embeddings = np.load(folder / EMBEDDINGS_FILE, mmap_mode="r")
        self.precursor_mz = np.load(folder / PRECURSORS_FILE, mmap_mode="r")
        self._offsets = np.load(folder / OFFSETS_FILE, mmap_mode="r")
        with open(folder / ENTRIES_FILE, "rb") as stream:
            self._entries = (mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
                             if self.count else b"")
        self._check_shapes()

    @classmethod
    def open(cls, folder: Path, verify: bool = True) -> Library:
        """Read a bundle; with `verify`, every file is checked against the sha256 the
        manifest records (a changed or damaged file is refused, naming it)."""
        try:
            manifest = json.loads((folder / LIBRARY_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise LibraryError(f"cannot read {folder / LIBRARY_FILE}: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise LibraryError(f"{folder / LIBRARY_FILE} is not a {FORMAT} manifest")
        if verify:
            for name, recorded in manifest.get("files", {}).items():
                path = folder / name
                if not path.is_file():
                    raise LibraryError(f"the library's file {name} is missing from {folder}")
                actual = sha256_of_file(path)
                if actual != recorded:
                    raise LibraryError(
                        f"the library's {name} has sha256 {actual[:16]}..., its manifest "
                        f"records {recorded[:16]}...: the file was changed or damaged after "
                        "the build")
        try:
            return cls(folder, manifest)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise LibraryError(f"library {folder} is incomplete or malformed: {exc}") from None

    def _check_shapes(self) -> None:
        want = {
            EMBEDDINGS_FILE: ((self.count, self.dimension), np.float32, self.embeddings),
            PRECURSORS_FILE: ((self.count,), np.float64, self.precursor_mz),
            OFFSETS_FILE: ((self.count + 1,), np.int64, self._offsets),
        }
        for name, (shape, dtype, array) in want.items():
            if array.shape != shape or array.dtype != dtype:
                raise LibraryError(f"the library's {name} holds {array.dtype} "
                                   f"{list(array.shape)}, its manifest says {np.dtype(dtype)} "
                                   f"{list(shape)}")

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.folder.parent.name))

    @property
    def version(self) -> int:
        return int(self.manifest.get("version", self.folder.name))

    def entry_bytes(self, index: int) -> bytes:
        """Entry `index`'s JSON line, undecoded (what a response's `metadata` carries)."""
        start, end = int(self._offsets[index]), int(self._offsets[index + 1])
        return bytes(self._entries[start:end]).rstrip(b"\n")

    def entry(self, index: int) -> dict:
        return json.loads(self.entry_bytes(index))

    def summary(self) -> dict:
        """What a client is told about the library beside its results."""
        return {
            "name": self.name,
            "version": self.version,
            "count": self.count,
            "dimension": self.dimension,
            "embedding_model": self.embedding_model.name,
            "embedding_model_version": self.embedding_model.version,
            "model_sha256": self.embedding_model.sha256,
            "backend": self.backend.get("kind", "exact"),
        }

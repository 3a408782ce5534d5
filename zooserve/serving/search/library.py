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
match's metadata is decoded only when it is answered.

A library serves only files its manifest lists and checks: each file it opens must be listed
under `files`, by a plain name inside the version folder that resolves inside the repository
folder (zooserve/serving/repository_files.py), with the sha256 it has. A local Qdrant store is a
live database that changes as it is opened: its folder is held to the boundary, not to a hash."""

from __future__ import annotations

import json
import mmap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from zooserve.repository.layout import LIBRARY_FILE, sha256_of_file
from zooserve.serving.repository_files import Boundary, FileRefused, safe_name
from zooserve.spectra.binning import Binning

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
    def open(cls, folder: Path, verify: bool = True, root: Path | None = None,
             verified: Mapping[str, str] | None = None) -> Library:
        """Read a bundle: the files it opens must be listed in its manifest, inside `root`
        (the repository folder; by default the folder two above the bundle's). With
        `verify`, every listed file is checked against the sha256 the manifest records (a
        changed or damaged file is refused, naming it); `verified` holds sha256 already
        computed for this load, which are not computed again."""
        root = folder.parent.parent if root is None else root
        boundary = Boundary(root)
        try:
            boundary.check_file(folder / LIBRARY_FILE, LIBRARY_FILE)
            manifest = json.loads((folder / LIBRARY_FILE).read_text())
        except FileRefused as exc:
            raise LibraryError(f"library {folder.parent.name} version {folder.name}: "
                               f"{exc}") from None
        except (OSError, ValueError) as exc:
            raise LibraryError(f"cannot read {folder / LIBRARY_FILE}: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise LibraryError(f"{folder / LIBRARY_FILE} is not a {FORMAT} manifest")
        listed = _listed_files(manifest)
        for name in needed_files(manifest):
            if name not in listed:
                raise LibraryError(f"the library's {name} is not listed in {LIBRARY_FILE}'s "
                                   "files: a library serves only files its manifest checks")
        for name, recorded in listed.items():
            path = folder / name
            try:
                boundary.check_file(path, f"the library's file {name}")
            except FileRefused as exc:
                raise LibraryError(str(exc)) from None
            if not verify:
                continue
            actual = (verified or {}).get(name) or sha256_of_file(path)
            if actual != recorded:
                raise LibraryError(
                    f"the library's {name} has sha256 {actual[:16]}..., its manifest "
                    f"records {recorded[:16]}...: the file was changed or damaged after "
                    "the build")
        _check_store_location(manifest, folder, boundary)
        try:
            return cls(folder, manifest)
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise LibraryError(f"library {folder} is incomplete or malformed: {exc}") from None

    def qdrant_location(self) -> str:
        """Where the library's Qdrant collection lives: a URL, `:memory:`, or the path of a
        local store inside the bundle."""
        location = str(self.backend["location"])
        if "://" not in location and location != ":memory:":
            location = str(self.folder / location)
        return location

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


def needed_files(manifest: dict) -> list[str]:
    """The files a bundle is opened from, besides its manifest."""
    needed = [EMBEDDINGS_FILE, PRECURSORS_FILE, ENTRIES_FILE, OFFSETS_FILE]
    backend = manifest.get("backend")
    if isinstance(backend, dict) and backend.get("kind") == "ann":
        needed.append(ANN_FILE)
    return needed


def _listed_files(manifest: dict) -> dict[str, str]:
    files = manifest.get("files", {})
    if not isinstance(files, dict):
        raise LibraryError(f"{LIBRARY_FILE}'s files is not an object of file name: sha256")
    for name, recorded in files.items():
        if not safe_name(name):
            # The name is not repeated: it points outside, and what is there is no concern
            # of this message, nor whether anything is.
            raise LibraryError(f"{LIBRARY_FILE} lists a file outside its version folder (an "
                               "absolute path or one with '..'); refused")
        if not isinstance(recorded, str):
            raise LibraryError(f"{LIBRARY_FILE}'s files: {name!r} has no sha256")
    return {name: recorded.lower() for name, recorded in files.items()}


def _check_store_location(manifest: dict, folder: Path, boundary: Boundary) -> None:
    """A local Qdrant store must be a folder of the bundle (never a path elsewhere)."""
    backend = manifest.get("backend")
    if not isinstance(backend, dict) or backend.get("kind") != "qdrant":
        return
    location = str(backend.get("location", ""))
    if "://" in location or location == ":memory:":
        return
    if not safe_name(location) or not boundary.contains(folder / location):
        raise LibraryError(f"{LIBRARY_FILE}'s Qdrant store is not a folder inside the "
                           "library's version folder; refused")
    for path in (folder / location).rglob("*"):
        if not boundary.contains(path):
            raise LibraryError(f"the library's Qdrant store holds "
                               f"{path.relative_to(folder).as_posix()!r}, which leads "
                               "outside the repository folder; refused")

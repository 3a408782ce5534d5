"""`zooserve library build`: embed every spectrum of an MGF file through the repository's
embedding model (ONNX Runtime, in batches) and write a library bundle as the next version
folder of `<models>/<name>/` (the layout is in zooserve/serving/search/library.py).

Everything is written into a hidden staging folder beside the versions (which the server
skips) and renamed into place last by the repository's publish_version, so an interrupted or
failed build leaves nothing behind and a polling server never sees half a library."""

from __future__ import annotations

import json
import sys
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

from zooserve.repository.layout import (
    FILES_KEY,
    LIBRARY_FILE,
    LIBRARY_STORE_FOLDER,
    MODEL_FILE,
    file_hashes,
    model_name_problem,
    read_card,
    sha256_of_file,
    version_folders,
    write_card,
)
from zooserve.repository.publish import publish_version
from zooserve.serving.repository_files import FileRefused, check_model_file
from zooserve.serving.search.library import (
    ANN_FILE,
    BACKENDS,
    EMBEDDINGS_FILE,
    ENTRIES_FILE,
    FORMAT,
    OFFSETS_FILE,
    PRECURSORS_FILE,
    Library,
)
from zooserve.spectra.binning import METADATA_KEY, Binning, PeakProblem, bin_peaks
from zooserve.spectra.mgf import read_mgf

DEFAULT_BATCH = 512
# Fields of an MGF header that become an entry's own keys rather than copies.
_OWN_FIELDS = {"TITLE", "PEPMASS"}


class LibraryBuildError(ValueError):
    """A build refused before anything is written, or stopped with nothing left behind."""


@dataclass
class BuildReport:
    folder: Path
    count: int
    skipped: dict[str, int]
    seconds: float
    backend: dict = field(default_factory=dict)

    def describe(self) -> str:
        size = sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
        skipped = ", ".join(f"{n} {why}" for why, n in self.skipped.items()) or "none"
        return (f"library {self.folder.parent.name} version {self.folder.name}: {self.count} "
                f"spectra in {self.seconds:.1f} s, {size / 2**20:.1f} MiB at {self.folder} "
                f"(skipped: {skipped}; backend {self.backend.get('kind', 'exact')})")


def embedding_model(
    models: Path, name: str, version: int | None
) -> tuple[int, Path, dict, str]:
    """(version, model file, card, the file's sha256) of the embedding model, checked
    against its card as the server checks a version it loads."""
    versions = version_folders(models / name)
    if not versions:
        raise LibraryBuildError(f"no model '{name}' under '{models}'")
    if version is None:
        version = max(versions)
    if version not in versions:
        raise LibraryBuildError(f"model '{name}' has no version {version} (it has "
                                f"{', '.join(map(str, sorted(versions)))})")
    model_file = versions[version] / MODEL_FILE
    card = read_card(versions[version])
    if METADATA_KEY not in card:
        raise LibraryBuildError(f"model '{name}' version {version} has no {METADATA_KEY} in "
                                "its card: it does not say how spectra become its input")
    try:
        actual = check_model_file(models, model_file)
    except FileRefused as exc:
        raise LibraryBuildError(f"model '{name}' version {version}: {exc}") from None
    return version, model_file, card, actual


def build_library(
    models: Path, name: str, spectra: Path, model: str = "spectra_embedding",
    model_version: int | None = None, backend: str = "exact", qdrant: str | None = None,
    batch: int = DEFAULT_BATCH, description: str = "", progress: TextIO | None = sys.stderr,
) -> BuildReport:
    problem = model_name_problem(name)
    if problem:
        raise LibraryBuildError(problem)
    if backend not in BACKENDS:
        raise LibraryBuildError(f"backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if qdrant is not None and "://" not in qdrant:
        raise LibraryBuildError(f"--qdrant takes the URL of a Qdrant engine (http://host:6333), "
                                f"not {qdrant!r}; without it the library keeps a local Qdrant "
                                f"store in its own folder")
    if not spectra.is_file():
        raise LibraryBuildError(f"spectra file '{spectra}' does not exist")
    folder = models / name
    if any((v / MODEL_FILE).exists() for v in version_folders(folder).values()):
        raise LibraryBuildError(f"'{name}' is a model in '{models}', not a library: "
                                "choose another name")
    version, model_file, card, model_sha256 = embedding_model(models, model, model_version)
    binning = Binning.from_dict(card[METADATA_KEY])
    started = time.monotonic()
    with publish_version(folder) as staged:
        staging, library_version = staged.folder, staged.version
        source = _embed_all(spectra, model_file, binning, staging, batch, progress)
        manifest = {
            "format": FORMAT,
            "name": name,
            "version": library_version,
            "description": description or f"spectral library from {spectra.name}",
            "count": source["count"],
            "dimension": source["dimension"],
            "embedding_model": {"name": model, "version": version,
                                "sha256": model_sha256},
            "binning": binning.to_dict(),
            "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "source": {"file": spectra.name, "sha256": sha256_of_file(spectra),
                       "spectra_read": source["read"], "skipped": source["skipped"],
                       "skipped_examples": source["examples"]},
        }
        manifest["files"] = {f: sha256_of_file(staging / f) for f in
                             (EMBEDDINGS_FILE, PRECURSORS_FILE, ENTRIES_FILE, OFFSETS_FILE)}
        manifest["backend"] = _backend(backend, qdrant, staging, manifest, progress)
        if (staging / ANN_FILE).exists():
            manifest["files"][ANN_FILE] = sha256_of_file(staging / ANN_FILE)
        (staging / LIBRARY_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
        card = _card(manifest, sha256_of_file(staging / LIBRARY_FILE))
        # Every file of the bundle; a local Qdrant store changes as it is opened, so it is
        # held to the repository's boundary, not to a sha256.
        card[FILES_KEY] = file_hashes(staging, skip=(LIBRARY_STORE_FOLDER,))
        write_card(staging, card)
    target = staged.target
    return BuildReport(target, manifest["count"], manifest["source"]["skipped"],
                       time.monotonic() - started, manifest["backend"])


def _embed_all(spectra: Path, model_file: Path, binning: Binning, staging: Path, batch: int,
               progress: TextIO | None) -> dict:
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    dimension = session.get_outputs()[0].shape[-1]
    raw = staging / "embeddings.f32"
    precursors = array("d")
    offsets = array("q", [0])
    skipped: Counter[str] = Counter()
    examples: list[str] = []
    seen: dict[str, int] = {}
    pending: list[np.ndarray] = []
    meter = _Progress(progress)
    read = 0
    with open(raw, "wb") as vectors_out, open(staging / ENTRIES_FILE, "wb") as entries_out:

        def flush() -> None:
            if pending:
                embedded = session.run([output_name], {input_name: np.stack(pending)})[0]
                norms = np.linalg.norm(embedded, axis=1, keepdims=True)
                embedded = (embedded / np.where(norms > 0, norms, 1.0)).astype(np.float32)
                vectors_out.write(embedded.tobytes())
                pending.clear()
                meter.show(len(precursors))

        for spectrum in read_mgf(spectra):
            read += 1
            try:
                vector = bin_peaks(spectrum.mz, spectrum.intensity, binning)
            except PeakProblem as exc:
                why = ("too few peaks" if "needs at least" in str(exc) else "invalid peaks")
                skipped[why] += 1
                if len(examples) < 5:
                    examples.append(f"{spectrum.id}: {str(exc).split(': ', 1)[-1]}")
                continue
            identifier = spectrum.id
            if identifier in seen:
                raise LibraryBuildError(
                    f"{spectra}: spectrum {spectrum.number} has id {identifier!r}, as spectrum "
                    f"{seen[identifier]} does; a library needs one id per entry (TITLE)")
            seen[identifier] = spectrum.number
            precursor = spectrum.precursor_mz
            entry = {"id": identifier, "precursor_mz": precursor}
            entry.update({k.lower(): v for k, v in spectrum.fields.items()
                          if k not in _OWN_FIELDS})
            line = json.dumps(entry, ensure_ascii=False).encode() + b"\n"
            entries_out.write(line)
            offsets.append(offsets[-1] + len(line))
            precursors.append(np.nan if precursor is None else precursor)
            pending.append(vector)
            if len(pending) >= batch:
                flush()
        flush()
    meter.done(len(precursors))
    count = len(precursors)
    if count == 0:
        raise LibraryBuildError(f"{spectra}: no spectrum the binning accepts ({read} read)")
    stored = np.lib.format.open_memmap(staging / EMBEDDINGS_FILE, mode="w+",
                                       dtype=np.float32, shape=(count, dimension))
    source = np.memmap(raw, dtype=np.float32, mode="r", shape=(count, dimension))
    for start in range(0, count, 65536):
        stored[start:start + 65536] = source[start:start + 65536]
    stored.flush()
    del stored, source
    raw.unlink()
    np.save(staging / PRECURSORS_FILE, np.frombuffer(precursors, dtype=np.float64))
    np.save(staging / OFFSETS_FILE, np.frombuffer(offsets, dtype=np.int64))
    return {"count": count, "dimension": int(dimension), "read": read,
            "skipped": dict(skipped), "examples": examples}


def _backend(kind: str, qdrant: str | None, staging: Path, manifest: dict,
             progress: TextIO | None) -> dict:
    """Build the backend's index and measure it against exact search on this library."""
    from zooserve.serving.search import backends

    if kind == "exact":
        return {"kind": "exact"}
    library = Library(staging, {**manifest, "backend": {"kind": "exact"}})
    exact = backends.ExactBackend(library.embeddings, library.precursor_mz)
    if kind == "ann":
        started = time.monotonic()
        index = backends.build_faiss_index(np.ascontiguousarray(library.embeddings))
        seconds = time.monotonic() - started
        ann = backends.FaissBackend(index, library.precursor_mz, exact)
        recall = backends.measure_recall(ann, exact, library.embeddings)
        measured = {"recall_at_10": round(recall, 4), "recall_sample": 1000,
                    "index": "faiss HNSW, M 32, efConstruction 200, efSearch 128",
                    "build_seconds": round(seconds, 1)}
        if recall < backends.ANN_MIN_RECALL:
            _say(progress, f"ANN index refused: recall@10 {recall:.4f} against exact search on "
                           f"this library is below {backends.ANN_MIN_RECALL}; exact search it is")
            return {"kind": "exact", "ann_refused": measured}
        backends.save_faiss_index(index, staging / ANN_FILE)
        _say(progress, f"ANN index: recall@10 {recall:.4f} against exact search")
        return {"kind": "ann", **measured}
    # A Qdrant engine at a URL, else a local Qdrant store in the bundle's own folder.
    location = qdrant or LIBRARY_STORE_FOLDER
    client = backends.open_qdrant(location if qdrant else str(staging / location))
    collection = f"{manifest['name']}-{manifest['version']}"
    try:
        backends.upload_to_qdrant(client, collection, library.embeddings, library.precursor_mz)
        search = backends.QdrantBackend(client, collection, library.count)
        recall = backends.measure_recall(search, exact, library.embeddings,
                                         sample=min(200, library.count))
    finally:
        client.close()
    return {"kind": "qdrant", "location": location, "collection": collection,
            "recall_at_10": round(recall, 4), "recall_sample": min(200, library.count)}


def _card(manifest: dict, manifest_sha256: str) -> dict:
    """The repository card of a library: what index, metadata and `zooserve models` show."""
    model = manifest["embedding_model"]
    return {
        "name": manifest["name"],
        "version": manifest["version"],
        "task": "search",
        "description": (f"{manifest['description']}: top-k of {manifest['count']} spectra by "
                        f"cosine of {model['name']} embeddings"),
        "library": {k: manifest[k] for k in ("count", "dimension", "embedding_model",
                                             "created")},
        "sha256": manifest_sha256,
        "created": manifest["created"],
    }


def _say(stream: TextIO | None, text: str) -> None:
    if stream is not None:
        print(text, file=stream, flush=True)


class _Progress:
    """Spectra embedded so far: one line rewritten on a terminal, a line every few seconds
    in a log."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and stream.isatty())
        self.started = self.last = time.monotonic()

    def show(self, count: int) -> None:
        now = time.monotonic()
        if self.stream is None or (not self.tty and now - self.last < 5):
            return
        self.last = now
        rate = count / max(now - self.started, 1e-9)
        end = "\r" if self.tty else "\n"
        print(f"embedding: {count} spectra ({rate:.0f}/s)", end=end, file=self.stream,
              flush=True)

    def done(self, count: int) -> None:
        if self.stream is not None:
            seconds = time.monotonic() - self.started
            print(f"embedding: {count} spectra in {seconds:.1f} s", file=self.stream,
                  flush=True)

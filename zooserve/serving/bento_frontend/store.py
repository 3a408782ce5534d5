"""The zoo in BentoML's model store, and back out of it as a repository folder.

`import_repository` copies each `<name>/<version>/` of a repository folder into the store as
the BentoML model `<name>:<version>` (model.onnx and card.json as files; the card also as
metadata, the labels and task as labels), made with `bentoml.models.create` (bentoml.onnx is
deprecated in 1.4). A spectral library's version folder (library.json instead of model.onnx,
zooserve/serving/search/library.py) is stored with every file of its bundle, and records the
embedding model it was built with under `metadata.requires`: importing some models imports the
embedding
models their libraries need, and a service that declares a library declares them too.
`repository_from_store` lays the stored models out again as `<folder>/<name>/<version>/`
(symbolic links, no copies), so the core loads them exactly as it loads a repository folder:
one loader, one set of rules. `select_zoo_tags` says which stored models a service (and so a
Bento) declares."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException, NotFound

from zooserve.repository.layout import (
    CARD_FILE,
    FILES_KEY,
    LIBRARY_FILE,
    MODEL_FILE,
    SERVING_FILE,
    ModelEntry,
    scan_repository,
    sha256_of_file,
)
from zooserve.serving import repository_files

log = logging.getLogger(__name__)

# Every model zooserve put in the store carries this label, so the service finds the zoo
# among whatever else the store holds.
ZOO_LABEL = "zooserve"
ZOO_LABEL_VALUE = "model"


class ZooStoreError(BentoMLException):
    """A one-line reason why the store cannot give the models asked for. A BentoMLException,
    so `bentoml build` and `bentoml serve` print it as one line instead of a traceback."""


@dataclass(frozen=True)
class ImportResult:
    tag: str
    action: str  # imported, replaced, unchanged, skipped
    detail: str = ""


def _stored(tag: str) -> Any | None:
    try:
        return bentoml.models.get(tag)
    except NotFound:
        return None


def import_repository(
    root: Path, force: bool = False, names: Collection[str] | None = None
) -> list[ImportResult]:
    """Put every model version of the repository folder into the model store (only the
    models called `names`, every version of each, when given, with the embedding models
    their libraries need). A library whose embedding model is not in the repository is
    skipped, with the reason."""
    entries = scan_repository(root)
    chosen = [e for e in entries if names is None or e.name in names]
    needs: dict[str, str] = {}  # a library's tag -> the tag of its embedding model
    problems: dict[str, str] = {}
    for entry in [e for e in chosen if e.path.name == LIBRARY_FILE]:
        tag = f"{entry.name}:{entry.version}"
        try:
            needed = _embedding_model_of(entry)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems[tag] = f"not a readable library: {exc}"
            continue
        found = [e for e in entries if (e.name, e.version) == needed]
        if not found or found[0].path.name != MODEL_FILE:
            problems[tag] = (f"its embedding model {needed[0]} version {needed[1]} is not in "
                             f"'{root}' (a library is served beside the model it was built "
                             "with)")
            continue
        needs[tag] = f"{needed[0]}:{needed[1]}"
        if found[0] not in chosen:
            chosen.append(found[0])
    results = []
    for entry in sorted(chosen, key=lambda e: (e.name, e.version)):
        tag = f"{entry.name}:{entry.version}"
        if tag in problems:
            log.warning("not importing %s: %s", tag, problems[tag])
            results.append(ImportResult(tag, "skipped", problems[tag]))
            continue
        results.append(_import_entry(entry, tag, force, needs.get(tag)))
    return results


def _embedding_model_of(entry: ModelEntry) -> tuple[str, int]:
    """(name, version) of the embedding model a library bundle was built with, read from its
    manifest (plain JSON: the store need not open the library to carry it)."""
    model = json.loads(entry.path.read_text())["embedding_model"]
    return str(model["name"]), int(model["version"])


def _bundle_files(entry: ModelEntry) -> list[Path]:
    """What travels into the store for a version: its model file, card and every file the
    card records (a load checks them all: zooserve/serving/repository_files.py); for a library also
    every file the manifest records (checked again when it is opened) and a local Qdrant
    store when that is its backend (zooserve/serving/search/library.py)."""
    folder = entry.folder
    recorded = entry.read_card().get(FILES_KEY)
    tops = sorted({name.split("/", 1)[0] for name in recorded}) \
        if isinstance(recorded, dict) else []
    files = [entry.path, folder / CARD_FILE,
             *(folder / top for top in tops if top not in (entry.path.name, CARD_FILE))]
    if entry.path.name != LIBRARY_FILE:
        return files
    manifest = json.loads(entry.path.read_text())
    files += [folder / name for name in manifest["files"] if folder / name not in files]
    location = str(manifest.get("backend", {}).get("location", ""))
    if location and "://" not in location and location != ":memory:" \
            and (folder / location).is_dir():
        files.append(folder / location)
    return files


def _import_entry(entry: ModelEntry, tag: str, force: bool, needs: str | None) -> ImportResult:
    # A library's manifest records the sha256 of every file of its bundle, so its own
    # sha256 stands for the bundle as model.onnx's does for a model.
    sha = sha256_of_file(entry.path)
    existing = _stored(tag)
    if existing is not None:
        if existing.info.metadata.get("sha256") == sha and not force:
            return ImportResult(tag, "unchanged")
        if not force:
            return ImportResult(tag, "skipped", "a different model has this tag; --force "
                                "replaces it")
        bentoml.models.delete(tag)
    card = entry.read_card()
    labels = {
        ZOO_LABEL: ZOO_LABEL_VALUE,
        "repository_name": entry.name,
        "repository_version": str(entry.version),
        "task": str(card.get("task", "")),
    }
    metadata: dict[str, Any] = {
        "card": _without_nulls(card),
        "class_labels": card.get("labels") or [],
        "sha256": sha,
        "source": str(entry.path.parent.resolve()),
    }
    if needs is not None:
        metadata["requires"] = [needs]
    try:
        files = _bundle_files(entry)
        with bentoml.models.create(tag, labels=labels, metadata=metadata) as model:
            stored = Path(model.path)
            for source in files:
                if source.is_dir():
                    shutil.copytree(source, stored / source.name)
                elif source.exists():
                    shutil.copy2(source, stored / source.name)
            # How the model is served (serving.json, kept beside the version folders in a
            # repository) travels with each version.
            serving = entry.folder.parent / SERVING_FILE
            if serving.exists():
                shutil.copy2(serving, stored / SERVING_FILE)
    except (ValueError, KeyError) as exc:  # e.g. a name BentoML's tags do not allow
        return ImportResult(tag, "skipped", str(exc))
    return ImportResult(tag, "replaced" if existing is not None else "imported")


def _without_nulls(value: Any) -> Any:
    """The card as BentoML metadata, which refuses null: a null field is left out (the
    card.json stored next to the model keeps it)."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value if v is not None]
    return value


def store_location() -> str:
    """Where the active model store is (the Bento's own when serving a Bento that has one),
    for messages."""
    from bentoml._internal.configuration.containers import BentoMLContainer

    active = BentoMLContainer.model_store.get()
    return str(getattr(active, "_path", BentoMLContainer.model_store_dir.get()))


def missing_tags(tags: list[str]) -> list[str]:
    """Those of `tags` the active model store does not hold."""
    return [tag for tag in tags if _stored(tag) is None]


def zoo_tags() -> list[str]:
    """The tags of the zoo's models in the active model store (the Bento's own when serving
    a Bento), every version, sorted."""
    return sorted(
        str(model.tag)
        for model in bentoml.models.list()
        if model.info.labels.get(ZOO_LABEL) == ZOO_LABEL_VALUE
    )


def select_zoo_tags(requested: str | None = None) -> list[str]:
    """The zoo models to declare: every one in the store, or the comma-separated `requested`
    ones, where `penguins:1` is that version and `penguins` every stored version of it; with
    the embedding model of each library among them."""
    stored = zoo_tags()
    if requested is None:
        return _with_requirements(stored, stored)
    chosen: list[str] = []
    for item in (part.strip() for part in requested.split(",")):
        if not item:
            continue
        matches = [t for t in stored if t == item or t.split(":", 1)[0] == item]
        if not matches:
            there = ", ".join(stored) or "none"
            raise ZooStoreError(
                f"model '{item}' is not in BentoML's model store ({store_location()}) as a "
                f"zooserve model (zooserve models there: {there}); `zooserve bento import` "
                "puts it there"
            )
        chosen += [t for t in matches if t not in chosen]
    return _with_requirements(chosen, stored)


def _with_requirements(chosen: list[str], stored: list[str]) -> list[str]:
    """`chosen` and the models they need (a library's embedding model), sorted; a needed
    model missing from the store is refused, naming both."""
    tags = set(chosen)
    for tag in chosen:
        for needed in bentoml.models.get(tag).info.metadata.get("requires", []):
            if needed not in stored:
                raise ZooStoreError(
                    f"model '{tag}' needs '{needed}', which is not in BentoML's model store "
                    f"({store_location()}); `zooserve bento import` puts both there")
            tags.add(needed)
    return sorted(tags)


def repository_from_store(tags: list[str], folder: Path) -> Path:
    """Lay the stored models out as a repository folder of links; returns the folder. A
    library needs its embedding model laid out beside it: a missing one is said here, and the
    library is then refused when loaded, naming it."""
    for tag in tags:
        model = bentoml.models.get(tag)
        labels = model.info.labels
        name = labels.get("repository_name", model.tag.name)
        version = labels.get("repository_version", model.tag.version)
        target = folder / name / str(version)
        target.mkdir(parents=True, exist_ok=True)
        stored = Path(model.path)
        # The links lead out of the folder the core loads from, into the store: the one
        # place outside a repository its boundary lets links go
        # (zooserve/serving/repository_files.py).
        repository_files.trust_folder(stored)
        files = [p for p in sorted(stored.iterdir()) if p.name not in _NOT_BUNDLE]
        for source in files:
            if source.exists():
                (target / source.name).symlink_to(source.resolve())
        serving = stored / SERVING_FILE
        if serving.exists() and not (target.parent / SERVING_FILE).exists():
            (target.parent / SERVING_FILE).symlink_to(serving.resolve())
        for needed in model.info.metadata.get("requires", []):
            if needed not in tags:
                log.warning("model %s needs %s, which is not served with it", tag, needed)
        log.info("model %s from the BentoML model store at %s", tag, model.path)
    return folder


# What a stored version's folder holds besides its files: BentoML's own record of the model,
# and the serving.json that belongs beside the version folders.
_NOT_BUNDLE = frozenset({"model.yaml", SERVING_FILE})

"""The zoo in BentoML's model store, and back out of it as a repository folder.

`import_repository` copies each `<name>/<version>/` of a repository folder into the store as
the BentoML model `<name>:<version>` (model.onnx and card.json as files; the card also as
metadata, the labels and task as labels), made with `bentoml.models.create` (bentoml.onnx is
deprecated in 1.4). `repository_from_store` lays the stored models out again as
`<folder>/<name>/<version>/` (symbolic links, no copies), so the core loads them exactly as it
loads a repository folder: one loader, one set of rules. `select_zoo_tags` says which stored
models a service (and so a Bento) declares."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException, NotFound

from service.layout import CARD_FILE, MODEL_FILE, SERVING_FILE, scan_repository, sha256_of_file

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
    models called `names`, every version of each, when given)."""
    results = []
    for entry in scan_repository(root):
        if names is not None and entry.name not in names:
            continue
        tag = f"{entry.name}:{entry.version}"
        sha = sha256_of_file(entry.path)
        existing = _stored(tag)
        if existing is not None:
            if existing.info.metadata.get("sha256") == sha and not force:
                results.append(ImportResult(tag, "unchanged"))
                continue
            if not force:
                why = "a different model has this tag; --force replaces it"
                results.append(ImportResult(tag, "skipped", why))
                continue
            bentoml.models.delete(tag)
        card = entry.read_card()
        labels = {
            ZOO_LABEL: ZOO_LABEL_VALUE,
            "repository_name": entry.name,
            "repository_version": str(entry.version),
            "task": str(card.get("task", "")),
        }
        metadata = {
            "card": _without_nulls(card),
            "class_labels": card.get("labels") or [],
            "sha256": sha,
            "source": str(entry.path.parent.resolve()),
        }
        try:
            with bentoml.models.create(tag, labels=labels, metadata=metadata) as model:
                shutil.copy2(entry.path, Path(model.path) / MODEL_FILE)
                # The card beside the model; how the model is served (serving.json, kept
                # beside the version folders in a repository) travels with each version.
                for source in (entry.folder / CARD_FILE, entry.folder.parent / SERVING_FILE):
                    if source.exists():
                        shutil.copy2(source, Path(model.path) / source.name)
        except ValueError as exc:  # e.g. a name BentoML's tags do not allow
            results.append(ImportResult(tag, "skipped", str(exc)))
            continue
        results.append(ImportResult(tag, "replaced" if existing is not None else "imported"))
    return results


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
    ones, where `penguins:1` is that version and `penguins` every stored version of it."""
    stored = zoo_tags()
    if requested is None:
        return stored
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
    return sorted(chosen)


def repository_from_store(tags: list[str], folder: Path) -> Path:
    """Lay the stored models out as a repository folder of links; returns the folder."""
    for tag in tags:
        model = bentoml.models.get(tag)
        labels = model.info.labels
        name = labels.get("repository_name", model.tag.name)
        version = labels.get("repository_version", model.tag.version)
        target = folder / name / str(version)
        target.mkdir(parents=True, exist_ok=True)
        for filename in (MODEL_FILE, CARD_FILE):
            source = Path(model.path) / filename
            if source.exists():
                (target / filename).symlink_to(source.resolve())
        serving = Path(model.path) / SERVING_FILE
        if serving.exists() and not (target.parent / SERVING_FILE).exists():
            (target.parent / SERVING_FILE).symlink_to(serving.resolve())
        log.info("model %s from the BentoML model store at %s", tag, model.path)
    return folder

"""`zooserve pull`: an artifact from an OCI registry into the repository, as the next version
of its model, through the same staged-then-renamed step as training and export
(zooserve.repository.publish), so a polling server never sees half a model. A pull whose
files the model's highest version already holds, byte for byte, writes nothing and says so.

Everything is checked before anything is published: the manifest (zooserve.registry.artifact),
each blob's size and sha256 as it streams in, the card's record of the files, a library's
embedding model, and, with verify keys, the signature. The files are fetched into a hidden
folder at the repository's top (`.pull-*`, which the server skips); on any refusal it goes,
and the repository is as it was."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from zooserve.registry.annotations import version_files
from zooserve.registry.artifact import Artifact, Layer, read_artifact
from zooserve.registry.distribution import RegistryClient
from zooserve.registry.reference import Reference
from zooserve.repository.layout import (
    CARD_FILE,
    FILES_KEY,
    MODEL_FILE,
    model_name_problem,
    read_card,
    sha256_of_file,
    version_folders,
)
from zooserve.repository.publish import publish_version

PULL_PREFIX = ".pull-"


class PullError(ValueError):
    """The artifact is refused or cannot be placed; nothing was written. One line."""


@dataclass(frozen=True)
class Pulled:
    reference: Reference
    digest: str  # the manifest's
    name: str
    folder: Path  # the version folder it was published as
    files: int
    size: int
    embedding_model: Path | None  # the embedding model's folder, when this pull placed it
    seconds: float
    already_there: bool = False  # the highest version held these very files: nothing written


def pull_artifact(client: RegistryClient, reference: Reference, root: Path,
                  name: str | None = None, verify_keys: Sequence[Path] = ()) -> Pulled:
    started = time.monotonic()
    media_type, manifest, digest = client.get_manifest(reference.repository,
                                                       reference.identifier)
    artifact = read_artifact(manifest, media_type, str(reference))
    name = name or artifact.name
    problem = model_name_problem(name)
    if problem:
        raise PullError(f"--name: {problem}")
    needs_embedding = _embedding_to_place(artifact, root, reference)
    present = None if needs_embedding else _already_there(artifact, root / name)
    if present is not None:  # an init container run again: nothing to add
        if verify_keys:
            _verify(present, verify_keys, f"{reference} (as {present})")
        return Pulled(reference, digest, name, present, len(artifact.files),
                      sum(layer.size for layer in artifact.files), None,
                      time.monotonic() - started, already_there=True)
    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    holding = Path(tempfile.mkdtemp(prefix=PULL_PREFIX, dir=root))
    try:
        version_files = holding / "version"
        _fetch(client, reference, artifact.files, version_files)
        _check_card(version_files, artifact.files, str(reference))
        embedding_files = None
        if needs_embedding:
            embedding_files = holding / "embedding"
            _fetch(client, reference, artifact.embedded_files, embedding_files)
        if verify_keys:
            _verify(version_files, verify_keys, f"{reference}")
            if embedding_files is not None:
                _verify(embedding_files, verify_keys, f"{reference}'s embedding model")
        placed_embedding = None
        if embedding_files is not None:
            model_name, model_version, _ = artifact.embedding_model
            placed_embedding = _publish(embedding_files, root / model_name, model_version)
        folder = _publish(version_files, root / name, None)
    except BaseException:
        shutil.rmtree(holding, ignore_errors=True)
        if created_root:
            _remove_if_empty(root)
        raise
    shutil.rmtree(holding, ignore_errors=True)
    return Pulled(reference, digest, name, folder, len(artifact.files),
                  sum(layer.size for layer in artifact.files), placed_embedding,
                  time.monotonic() - started)


def _already_there(artifact: Artifact, model_folder: Path) -> Path | None:
    """The model's highest version folder when it holds exactly the artifact's files (the
    same paths, the same sha256 each), else None. Pulling the same reference twice (an
    init container that runs again on the same node) then adds no copy as another version."""
    versions = version_folders(model_folder)
    if not versions:
        return None
    highest = versions[max(versions)]
    wanted = {layer.path: layer.digest.removeprefix("sha256:") for layer in artifact.files}
    held = version_files(highest)
    if sorted(name for name, _ in held) != sorted(wanted):
        return None
    if all(sha256_of_file(path) == wanted[name] for name, path in held):
        return highest
    return None


def _embedding_to_place(artifact: Artifact, root: Path, reference: Reference) -> bool:
    """Whether a library's embedding model must be published from the artifact: False when
    the repository already holds that very model (or the artifact is no library). Refused
    when the repository holds another model under its number, or nobody has it."""
    if artifact.embedding_model is None:
        return False
    name, version, sha256 = artifact.embedding_model
    said = f"{name} version {version}"
    folder = root / name / str(version)
    if (folder / MODEL_FILE).is_file():
        if sha256_of_file(folder / MODEL_FILE) != sha256:
            raise PullError(f"{reference} is a library built with {said} (sha256 "
                            f"{sha256[:16]}...), and '{root}' holds another {said}: pull "
                            "into another --models folder")
        return False
    if folder.exists():
        raise PullError(f"{reference} is a library built with {said}, and {folder} holds no "
                        f"{MODEL_FILE}")
    carried = {layer.path: layer for layer in artifact.embedded_files}
    model = carried.get(MODEL_FILE)
    if model is None:
        raise PullError(f"{reference} is a library built with {said} (sha256 {sha256[:16]}...), "
                        f"which neither the artifact carries nor '{root}' holds: pull that "
                        "model first, at that version")
    if model.digest != f"sha256:{sha256}":
        raise PullError(f"{reference}: the embedding model it carries is not {said} as the "
                        "library records it (its sha256 differs)")
    return True


def _fetch(client: RegistryClient, reference: Reference, layers: Sequence[Layer],
           folder: Path) -> None:
    folder.mkdir()
    for layer in layers:
        destination = folder / layer.path
        destination.parent.mkdir(parents=True, exist_ok=True)
        client.fetch_blob(reference.repository, layer.digest, layer.size, destination)


def _check_card(folder: Path, layers: Sequence[Layer], shown: str) -> None:
    """The card's record of the files (sha256 each) is what arrived: a file it records and
    the artifact lacks, or one whose digest differs, is refused here, not at load."""
    carried = {layer.path: layer.digest.removeprefix("sha256:") for layer in layers}
    if CARD_FILE not in carried:
        return
    try:
        recorded = read_card(folder).get(FILES_KEY) or {}
    except (ValueError, UnicodeDecodeError):
        raise PullError(f"{shown}: its {CARD_FILE} is not JSON") from None
    if not isinstance(recorded, dict):
        raise PullError(f"{shown}: its {CARD_FILE}'s '{FILES_KEY}' is not an object")
    for path, sha256 in sorted(recorded.items()):
        if path not in carried:
            raise PullError(f"{shown}: its card records {str(path)[:80]!r}, which the artifact "
                            "does not carry")
        if carried[path] != str(sha256).lower():
            raise PullError(f"{shown}: {str(path)[:80]!r} is not the file its card records "
                            "(sha256 differs)")


def _verify(folder: Path, keys: Sequence[Path], shown: str) -> None:
    from zooserve.repository.signing import SigningError, verify_version

    try:
        verify_version(folder, keys)
    except SigningError as exc:
        raise PullError(f"{shown}: {exc}") from None


def _publish(files: Path, model_folder: Path, version: int | None) -> Path:
    with publish_version(model_folder, version=version) as staged:
        for entry in files.iterdir():
            os.rename(entry, staged.folder / entry.name)
    return staged.target


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass

"""The repository folder is a boundary, and a card is a promise about the files beside it.

Before a version is opened, every file it would be loaded from is checked here: its card,
the model's serving.json, the served file (model.onnx or a library's library.json), each
file the ONNX model keeps tensor data in (external data), and every file the card records
(FILES_KEY, zooserve/repository/layout.py). Each must resolve, symbolic links followed, to a regular
file inside the repository folder: links that stay inside are followed, anything that leads out
(the version or model folder itself included) is refused. A refusal names the file as the
repository holds it, never where a link leads nor anything about a file outside, and it
reads the same whether that outside path exists or not: the boundary is decided from the
path alone, before anything outside is looked at.

Then the contents: every file the card records must have the sha256 recorded. A recorded
file that is absent is refused when the version is loaded from it, and only logged otherwise
(a training plot left behind in a copy changes nothing served). A card from before cards
recorded every file still loads its model.onnx against `onnx.sha256`; ONNX external data
that no card records is refused, whatever the card's age: its bytes are the model's weights,
and a weights file nobody vouched for is exactly the swap the check is there to catch."""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from zooserve.repository.layout import (
    CARD_FILE,
    FILES_KEY,
    MODEL_FILE,
    SERVING_FILE,
    sha256_of_file,
)
from zooserve.serving.onnx_files import NotOnnx, external_data_locations

_SHA256 = re.compile("[0-9a-f]{64}")

# Folders outside a repository that its links may lead into: only those zooserve's own
# BentoML layout makes (zooserve/serving/bento_frontend/store.py links a repository's files to the
# model store's copies, which `zooserve bento import` wrote). Nothing a repository's
# contents say can add to it.
_TRUSTED: list[str] = []


def trust_folder(folder: Path) -> None:
    """Let repositories link to files under `folder` (zooserve's BentoML layout only)."""
    real = os.path.realpath(folder)
    if real not in _TRUSTED:
        _TRUSTED.append(real)


class FileRefused(ValueError):
    """A version's files break the boundary or do not match its card; the message is safe
    to show in the repository index."""


def card_sha256(card: dict) -> str | None:
    """The model file's sha256 as the card records it (`onnx.sha256`, as the training
    pipeline writes it; a top-level `sha256` is read too)."""
    onnx = card.get("onnx")
    recorded = onnx.get("sha256") if isinstance(onnx, dict) else None
    recorded = recorded or card.get("sha256")
    return str(recorded).lower() if recorded else None


def safe_name(name: object) -> bool:
    """A file name a card, manifest or model may use: relative, inside its folder (no `..`,
    no absolute path, no empty or `.` part), one line of text."""
    if not isinstance(name, str) or not name or "\\" in name or "\0" in name \
            or "\n" in name or name.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in name.split("/"))


class Boundary:
    """The repository folder (symbolic links resolved) and the folders trusted beside it."""

    def __init__(self, root: Path) -> None:
        self._roots = [os.path.realpath(root), *_TRUSTED]

    def contains(self, path: Path) -> bool:
        # realpath without strict: a link to an outside path that does not exist resolves
        # just as one to a path that does, so the answer never depends on what is outside.
        real = os.path.realpath(path)
        return any(real == root or real.startswith(root.rstrip(os.sep) + os.sep)
                   for root in self._roots)

    def check_file(self, path: Path, what: str, must_exist: bool = True) -> bool:
        """True for a regular file inside; False for an absent one (unless `must_exist`);
        FileRefused for one that leads outside or is something else."""
        if not self.contains(path):
            raise FileRefused(f"{what} leads outside the repository folder (a symbolic link "
                              "out of it); only links that stay inside are followed")
        if path.is_file():
            return True
        if path.exists():  # inside, so looking at it says nothing about outside
            raise FileRefused(f"{what} is not a regular file")
        if must_exist:
            raise FileRefused(f"{what} is missing")
        return False


@dataclass
class CheckedFiles:
    """What a version is loaded from, checked: the bytes of its card and serving.json, and
    the sha256 of every file checked, by its name in the version folder."""

    card: dict
    card_bytes: bytes
    serving_bytes: bytes
    hashes: dict[str, str] = field(default_factory=dict)
    unchecked: bool = False  # the card recorded no sha256 for the served file
    absent: list[str] = field(default_factory=list)  # recorded, not there, not needed

    def digest(self) -> str:
        """One sha256 over everything the version is loaded from."""
        parts = [f"{name}={sha}".encode() for name, sha in sorted(self.hashes.items())]
        return hashlib.sha256(b"\0".join([*parts, self.card_bytes,
                                          self.serving_bytes])).hexdigest()


def check_version(root: Path, served: Path) -> CheckedFiles:
    """Check the version whose served file is `served` (root/name/version/model.onnx or
    library.json) against the boundary and its card; FileRefused says why not."""
    boundary = Boundary(root)
    folder = served.parent
    if not boundary.contains(folder):
        raise FileRefused("its folder leads outside the repository folder (a symbolic link "
                          "out of it); only links that stay inside are followed")
    card_path, serving_path = folder / CARD_FILE, folder.parent / SERVING_FILE
    card_bytes = card_path.read_bytes() \
        if boundary.check_file(card_path, CARD_FILE, must_exist=False) else b""
    serving_bytes = serving_path.read_bytes() \
        if boundary.check_file(serving_path, f"the model's {SERVING_FILE}",
                               must_exist=False) else b""
    try:
        card = json.loads(card_bytes) if card_bytes else {}
    except ValueError as exc:
        raise FileRefused(f"{CARD_FILE} is not JSON: {exc}") from None
    if not isinstance(card, dict):
        raise FileRefused(f"{CARD_FILE} does not hold a JSON object")
    checked = CheckedFiles(card, card_bytes, serving_bytes)
    recorded = _recorded_files(card)
    # The served file first: one changed after export is said to be, before its contents
    # are read for the external data they name.
    boundary.check_file(served, served.name)
    _check_sha256(checked, folder, served.name, recorded.get(served.name), card_sha256(card))
    needed = _external_data(served) if served.name == MODEL_FILE else []
    for name in sorted((set(needed) | set(recorded)) - {served.name}):
        if not boundary.check_file(folder / name, repr(name), must_exist=name in needed):
            checked.absent.append(name)
            continue
        if name not in recorded:
            raise FileRefused(
                f"{served.name} keeps tensor data in {name!r}, which its card does not "
                "record: a weights file nobody vouched for is not loaded (export the model "
                "again, or record the files as they are with "
                "zooserve.repository.layout.record_files)")
        _check_sha256(checked, folder, name, recorded[name])
    return checked


def _check_sha256(checked: CheckedFiles, folder: Path, name: str, *recorded: str | None) -> None:
    actual = sha256_of_file(folder / name)
    wanted = [sha for sha in recorded if sha]
    if not wanted:
        checked.unchecked = True
    for sha in wanted:
        if actual != sha:
            raise FileRefused(
                f"{name} has sha256 {actual[:16]}..., its card records {sha[:16]}...: the file "
                "was changed or damaged after export (or the card belongs to another model)")
    checked.hashes[name] = actual


def check_model_file(root: Path, model_file: Path) -> str:
    """The sha256 of a model another one is built on (a library's embedding model), checked
    as a version of its own is."""
    return check_version(root, model_file).hashes[model_file.name]


def _recorded_files(card: dict) -> dict[str, str]:
    files = card.get(FILES_KEY, {})
    if not isinstance(files, dict):
        raise FileRefused(f"{CARD_FILE}'s {FILES_KEY!r} is not an object of file name: "
                          "sha256")
    for name, sha in files.items():
        if not safe_name(name):
            raise FileRefused(f"{CARD_FILE}'s {FILES_KEY!r} names a file outside its version "
                              "folder (an absolute path or one with '..'); refused")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha.lower()):
            raise FileRefused(f"{CARD_FILE}'s {FILES_KEY!r}: {name!r} has no sha256 (64 hex "
                              "digits)")
    return {name: sha.lower() for name, sha in files.items()}


def _external_data(model_file: Path) -> list[str]:
    try:
        locations = external_data_locations(model_file)
    except NotOnnx as exc:
        # Refused rather than left to ONNX Runtime: a file this reader cannot follow may
        # name external data it could not check.
        raise FileRefused(f"{model_file.name} is not an ONNX model (its protobuf cannot be "
                          f"read: {exc})") from None
    for location in locations:
        if not safe_name(location):
            raise FileRefused(f"{model_file.name} keeps tensor data in a file outside its "
                              "version folder (an absolute path or one with '..'); refused")
    return [str(PurePosixPath(location)) for location in locations]

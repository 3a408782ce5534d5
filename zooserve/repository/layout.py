"""The model repository's contract on disk, in one leaf module that training (which writes
repositories) and the service (which reads them) both import: Triton's layout
`<root>/<name>/<version>/model.onnx` with a `card.json` beside the model.

Plain file reading only: no ONNX Runtime, no numpy, so listing a repository needs nothing
but the base install."""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from zooserve.protocol.limits import VERSION_MAX_DIGITS

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
# A spectral library's manifest: a version folder holding it instead of a model file is a
# library served as a search model (zooserve/serving/search/library.py has the bundle's layout).
LIBRARY_FILE = "library.json"
CARD_FILE = "card.json"
# Beside the version folders: how the server runs the model (zooserve/serving/serving_config.py).
SERVING_FILE = "serving.json"
# The card's record of every file in its version folder but itself: relative path (with
# `/` between folders) -> sha256. A load checks them (zooserve/serving/repository_files.py).
FILES_KEY = "files"
# The version's OpenSSF model-signing signature (zooserve/repository/signing.py). It covers
# every file of the folder, the card included, so the card cannot record it in turn.
SIGNATURE_FILE = "model.sig"
# A library's local Qdrant store (zooserve/serving/search/library_build.py writes it): it
# changes as it is opened, so neither the card's FILES_KEY nor a signature covers it; it is
# held to the repository's boundary instead.
LIBRARY_STORE_FOLDER = "qdrant"

# Triton's rule: a version folder is a positive number written in ASCII digits without a
# leading zero (`007` is ignored), and it must fit the protocol's int64 (at most 18 digits
# keeps it clear). `str.isdigit` is not the test: it accepts `²` and other scripts' digits,
# which `int` rejects or reads as another number.
_VERSION = re.compile(f"[1-9][0-9]{{0,{VERSION_MAX_DIGITS - 1}}}")


# A model folder's name, as clients spell it in a URL path or a gRPC field: ASCII letters,
# digits, `_`, `-` and `.`, starting with a letter or digit (so never hidden, never `..`), at
# most 64 characters. Writers (`zooserve export`) hold to it; the server reads any folder.
MODEL_NAME_MAX_LENGTH = 64
_MODEL_NAME = re.compile(f"[A-Za-z0-9][A-Za-z0-9_.-]{{0,{MODEL_NAME_MAX_LENGTH - 1}}}")


def model_name_problem(name: str) -> str | None:
    """Why `name` cannot name a model folder, in words; None when it can."""
    if _MODEL_NAME.fullmatch(name):
        return None
    return (
        f"{name[:MODEL_NAME_MAX_LENGTH]!r} is not a valid model name: use ASCII letters, "
        f"digits, '_', '-' and '.', starting with a letter or digit, at most "
        f"{MODEL_NAME_MAX_LENGTH} characters"
    )


def parse_version(text: str) -> int | None:
    """The version a folder name (or a request's version string) stands for; None if none.
    Every path that reads a version, from disk or from a request, goes through here."""
    return int(text) if _VERSION.fullmatch(text) else None


def version_folders(model_dir: Path) -> dict[int, Path]:
    """A model folder's version folders by number; other folders are skipped with a warning
    (hidden ones, such as publish.py's staging folders, silently)."""
    found: dict[int, Path] = {}
    if not model_dir.is_dir():
        return found
    for folder in sorted(p for p in model_dir.iterdir() if p.is_dir()):
        version = parse_version(folder.name)
        if version is None:
            if not folder.name.startswith("."):
                log.warning(
                    "skipping %r in %s: version folders are positive integers in ASCII digits "
                    "without a leading zero, at most %d of them",
                    folder.name[:64], model_dir, VERSION_MAX_DIGITS,
                )
            continue
        found[version] = folder
    return found


def read_card(version_dir: Path) -> dict:
    """The version's card, or {} when it has none."""
    path = version_dir / CARD_FILE
    return json.loads(path.read_text()) if path.exists() else {}


def write_card(version_dir: Path, card: dict) -> Path:
    path = version_dir / CARD_FILE
    path.write_text(json.dumps(card, indent=2) + "\n")
    return path


def sha256_of_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(version_dir: Path, skip: Iterable[str] = ()) -> dict[str, str]:
    """The sha256 of every file under a version folder, by relative path, for its card's
    FILES_KEY: all but the card itself, its signature and the top-level entries named in
    `skip` (a library's live Qdrant store, LIBRARY_STORE_FOLDER, which changes as it is
    opened)."""
    left_out = {CARD_FILE, SIGNATURE_FILE, *skip}
    hashes = {}
    for path in sorted(version_dir.rglob("*")):
        name = path.relative_to(version_dir).as_posix()
        if path.is_file() and name.split("/", 1)[0] not in left_out:
            hashes[name] = sha256_of_file(path)
    return hashes


def record_files(version_dir: Path, skip: Iterable[str] = ()) -> dict:
    """Rewrite a version's card with FILES_KEY recording the files there now; returns the
    card. For a card written before cards recorded every file (or after its folder gained
    one on purpose): whoever runs it vouches for the files as they are."""
    card = read_card(version_dir)
    card[FILES_KEY] = file_hashes(version_dir, skip)
    write_card(version_dir, card)
    return card


@dataclass(frozen=True)
class ModelEntry:
    """A model version found on disk, not yet loaded."""

    name: str
    version: int
    path: Path  # the model file (or a library's manifest)

    @property
    def folder(self) -> Path:
        return self.path.parent

    def read_card(self) -> dict:
        return read_card(self.folder)


def served_file(version_dir: Path) -> Path | None:
    """What a version folder serves: its model file, else its library manifest; None when
    it has neither."""
    for name in (MODEL_FILE, LIBRARY_FILE):
        if (version_dir / name).is_file():
            return version_dir / name
    return None


def served_files(model_dir: Path) -> dict[int, Path]:
    """A model folder's versions that have something to serve, by number, with the file each
    serves; a version folder with nothing is skipped with a warning."""
    files = {}
    for version, folder in sorted(version_folders(model_dir).items()):
        model_file = served_file(folder)
        if model_file is None:
            log.warning("skipping %s: no %s (or %s) in it", folder, MODEL_FILE, LIBRARY_FILE)
            continue
        files[version] = model_file
    return files


def scan_repository(root: Path) -> list[ModelEntry]:
    """Every `<name>/<version>/model.onnx` (or library.json) under root, sorted by name
    then version."""
    if not root.is_dir():
        raise FileNotFoundError(f"models folder '{root}' does not exist or is not a folder")
    return [
        ModelEntry(model_dir.name, version, model_file)
        for model_dir in sorted(p for p in root.iterdir()
                                if p.is_dir() and not p.name.startswith("."))
        for version, model_file in served_files(model_dir).items()
    ]


def select_models(root: Path, names: Iterable[str] | None = None) -> list[ModelEntry]:
    """Every version of the models called `names` (of every model when None), in
    scan_repository's order. A name the repository does not have raises LookupError with a
    one-line message naming the models it does have."""
    entries = scan_repository(root)
    if names is None:
        return entries
    wanted = list(dict.fromkeys(names))
    available = sorted({entry.name for entry in entries})
    unknown = [name for name in wanted if name not in available]
    if unknown:
        raise LookupError(
            f"no model {', '.join(repr(n) for n in unknown)} under '{root}'; "
            f"models there: {', '.join(available) or 'none'}"
        )
    return [entry for entry in entries if entry.name in wanted]


class VersionNotFound(LookupError):
    """NAME[:VERSION] names no version of the repository; the message says what there is."""


def find_version(models: Path, reference: str) -> tuple[str, int, Path]:
    """(name, version, version folder) for NAME or NAME:VERSION; VersionNotFound (or
    ValueError for text that names no version) says why not, in one line."""
    name, _, version_text = reference.partition(":")
    problem = model_name_problem(name)
    if problem:
        raise ValueError(problem)
    if not models.is_dir():
        raise VersionNotFound(f"models folder '{models}' does not exist or is not a folder")
    versions = served_files(models / name)
    if not versions:
        raise VersionNotFound(f"no model {name!r} under '{models}' (no version folder holding "
                              f"{MODEL_FILE} or {LIBRARY_FILE})")
    if not version_text:
        version = max(versions)
    else:
        version = parse_version(version_text)
        if version is None:
            raise ValueError(f"{version_text[:32]!r} is not a version: a positive number "
                             "without a leading zero")
        if version not in versions:
            raise VersionNotFound(f"model {name!r} has no version {version} under '{models}'; "
                                  f"versions: {', '.join(map(str, sorted(versions)))}")
    return name, version, versions[version].parent


def library_embedding_model(version_dir: Path) -> tuple[str, int, str] | None:
    """The embedding model a library version was built with, as its library.json names it:
    (name, version, sha256 of that model's model.onnx); None for a version that is no
    library. ValueError (one line) when library.json does not name one properly."""
    manifest_path = version_dir / LIBRARY_FILE
    if not manifest_path.is_file() or (version_dir / MODEL_FILE).is_file():
        return None
    try:
        wanted = json.loads(manifest_path.read_text())["embedding_model"]
        name, version, sha256 = wanted["name"], wanted["version"], wanted["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{manifest_path} names no embedding model (embedding_model: name, "
                         "version, sha256)") from None
    if not isinstance(name, str) or not isinstance(version, int) or not isinstance(sha256, str):
        raise ValueError(f"{manifest_path}: embedding_model's name, version and sha256 must "
                         "be a string, a number and a string")
    return name, version, sha256

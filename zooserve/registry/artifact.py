"""A repository version as an OCI artifact: one image manifest whose layers are the version
folder's files, one blob per file, each titled with its path as ORAS titles files (so
`oras pull` writes the same folder), and whose annotations say what the card says
(zooserve.registry.annotations).

A spectral library travels with its embedding model: the model's version folder rides in
the same manifest, its files titled `embedding-model/<path>` and marked with the EMBEDDED
annotation, so one pull gets both.

`read_artifact` checks a pulled manifest before a byte of a file is fetched: every layer
names a safe relative path once, with a sha256 digest and a size within the limits, and the
files the annotations record are the files the layers carry."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from zooserve.registry import annotations as keys
from zooserve.registry.annotations import recorded_files, version_annotations, version_files
from zooserve.registry.distribution import OCI_MANIFEST
from zooserve.repository.layout import (
    MODEL_FILE,
    model_name_problem,
    parse_version,
    sha256_of_file,
)

MODEL_ARTIFACT = "application/vnd.zooserve.model.v1"
LIBRARY_ARTIFACT = "application/vnd.zooserve.library.v1"
ARTIFACT_TYPES = (MODEL_ARTIFACT, LIBRARY_ARTIFACT)
FILE_MEDIA_TYPE = "application/vnd.zooserve.file.v1"
# The OCI spec's empty descriptor: the config of an artifact that needs none.
EMPTY_CONFIG = b"{}"
EMPTY_MEDIA_TYPE = "application/vnd.oci.empty.v1+json"
TITLE = "org.opencontainers.image.title"
EMBEDDED = "io.zooserve.embedding-model.file"  # "true" on the embedding model's layers
EMBEDDED_PREFIX = "embedding-model/"

MAX_FILES = 10_000
MAX_TOTAL_BYTES = 32 << 30  # 32 GiB: far above any lesson model, far below a full disk


class ArtifactError(ValueError):
    """A manifest that is not a zooserve artifact, or breaks its rules; one line."""


@dataclass(frozen=True)
class Layer:
    path: str  # relative path inside its version folder
    digest: str  # sha256:<hex>, which is also the file's sha256
    size: int
    embedded: bool = False  # one of the library's embedding model's files


@dataclass(frozen=True)
class Artifact:
    """A zooserve artifact's manifest, read and checked."""

    name: str  # the model name its annotations give
    version: int  # the version it had where it was pushed
    kind: str  # "model" or "library"
    layers: tuple[Layer, ...]
    annotations: dict[str, str]
    embedding_model: tuple[str, int, str] | None  # a library's (name, version, sha256)

    @property
    def files(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if not layer.embedded)

    @property
    def embedded_files(self) -> tuple[Layer, ...]:
        return tuple(layer for layer in self.layers if layer.embedded)

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class Upload:
    digest: str
    size: int
    path: Path | None  # None: the empty config, sent from memory


def digest_of(path: Path) -> str:
    return "sha256:" + sha256_of_file(path)


def build_manifest(version_dir: Path, name: str, version: int,
                   embedding: tuple[Path, str, int] | None = None
                   ) -> tuple[bytes, list[Upload]]:
    """The manifest (canonical JSON bytes) of a version, and the blobs it needs, config
    first. `embedding`: a library's embedding model as (version folder, name, version)."""
    uploads = [Upload("sha256:" + hashlib.sha256(EMPTY_CONFIG).hexdigest(),
                      len(EMPTY_CONFIG), None)]
    layers = []
    sources = [(version_dir, "", False)]
    if embedding is not None:
        sources.append((embedding[0], EMBEDDED_PREFIX, True))
    own_files, embedding_line = {}, None  # each file is hashed once, here
    for folder, prefix, embedded in sources:
        for relative, path in version_files(folder):
            digest, size = digest_of(path), path.stat().st_size
            layer_annotations = {TITLE: prefix + relative}
            if embedded:
                layer_annotations[EMBEDDED] = "true"
                if relative == MODEL_FILE:
                    embedding_line = f"{embedding[1]}:{embedding[2]}@{digest}"
            else:
                own_files[relative] = digest.removeprefix("sha256:")
            layers.append({"mediaType": FILE_MEDIA_TYPE, "digest": digest, "size": size,
                           "annotations": layer_annotations})
            uploads.append(Upload(digest, size, path))
    described = version_annotations(version_dir, name, version, embedding_line, own_files)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": LIBRARY_ARTIFACT if described[keys.KIND] == "library"
        else MODEL_ARTIFACT,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": uploads[0].digest,
                   "size": uploads[0].size},
        "layers": layers,
        "annotations": described,
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode(), uploads


def read_artifact(manifest_bytes: bytes, media_type: str, shown: str) -> Artifact:
    """Check a pulled manifest (`shown`: the reference, for messages) and read it."""
    try:
        manifest = json.loads(manifest_bytes)
    except (ValueError, UnicodeDecodeError):
        raise ArtifactError(f"{shown}: the manifest is not JSON") from None
    if not isinstance(manifest, dict):
        raise ArtifactError(f"{shown}: the manifest is not a JSON object")
    kind_of_manifest = manifest.get("mediaType") or media_type
    if kind_of_manifest != OCI_MANIFEST:
        raise ArtifactError(f"{shown} is not a zooserve model artifact (its manifest is "
                            f"{str(kind_of_manifest)[:80]!r}: an image or an index; model-only "
                            "images are pulled with docker or mounted as volumes)")
    artifact_type = manifest.get("artifactType")
    if artifact_type not in ARTIFACT_TYPES:
        said = f"artifactType {str(artifact_type)[:80]!r}" if artifact_type else \
            "no artifactType"
        raise ArtifactError(f"{shown} is not a zooserve model artifact ({said}; expected one "
                            f"of {', '.join(ARTIFACT_TYPES)})")
    described = manifest.get("annotations")
    if not isinstance(described, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in described.items()):
        raise ArtifactError(f"{shown}: the manifest's annotations are not strings")
    name = described.get(keys.MODEL_NAME, "")
    problem = model_name_problem(name)
    if problem:
        raise ArtifactError(f"{shown}: annotation {keys.MODEL_NAME}: {problem}")
    version = parse_version(described.get(keys.MODEL_VERSION, ""))
    if version is None:
        raise ArtifactError(f"{shown}: annotation {keys.MODEL_VERSION} is not a version number")
    layers = _read_layers(manifest.get("layers"), shown)
    kind = "library" if artifact_type == LIBRARY_ARTIFACT else "model"
    embedding = _embedding_model(described.get(keys.EMBEDDING_MODEL), shown) \
        if kind == "library" else None
    artifact = Artifact(name, version, kind, layers, described, embedding)
    _check_recorded(artifact, shown)
    return artifact


def _read_layers(raw: object, shown: str) -> tuple[Layer, ...]:
    if not isinstance(raw, list) or not raw:
        raise ArtifactError(f"{shown}: the manifest has no layers")
    if len(raw) > MAX_FILES:
        raise ArtifactError(f"{shown}: {len(raw)} layers; at most {MAX_FILES} files are taken")
    layers, seen, total = [], set(), 0
    for index, item in enumerate(raw):
        where = f"{shown}: layer {index}"
        if not isinstance(item, dict):
            raise ArtifactError(f"{where} is not an object")
        digest, size = item.get("digest"), item.get("size")
        if not isinstance(digest, str) or not digest.startswith("sha256:") \
                or len(digest) != 71 or any(c not in "0123456789abcdef" for c in digest[7:]):
            raise ArtifactError(f"{where}: digest must be sha256:<64 hex digits>")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ArtifactError(f"{where}: size must be a whole number of bytes")
        layer_annotations = item.get("annotations") or {}
        title = layer_annotations.get(TITLE) if isinstance(layer_annotations, dict) else None
        embedded = isinstance(layer_annotations, dict) and \
            layer_annotations.get(EMBEDDED) == "true"
        if not isinstance(title, str) or not title:
            raise ArtifactError(f"{where} has no {TITLE} annotation: not a file of a version")
        path = title.removeprefix(EMBEDDED_PREFIX) if embedded else title
        if embedded and not title.startswith(EMBEDDED_PREFIX):
            raise ArtifactError(f"{where}: an embedding model's file must be titled "
                                f"{EMBEDDED_PREFIX}<path>")
        if not _safe_path(path):
            raise ArtifactError(f"{where}: {title[:80]!r} is not a safe relative file path")
        if (embedded, path) in seen:
            raise ArtifactError(f"{where}: {title[:80]!r} appears twice")
        seen.add((embedded, path))
        total += size
        if total > MAX_TOTAL_BYTES:
            raise ArtifactError(f"{shown}: its files declare more than "
                                f"{MAX_TOTAL_BYTES >> 30} GiB")
        layers.append(Layer(path, digest, size, embedded))
    return tuple(layers)


def _safe_path(path: str) -> bool:
    """Relative, inside its folder, no hidden part, one line, not too long."""
    if not path or len(path) > 255 or path.startswith("/") or "\\" in path \
            or any(ord(c) < 32 for c in path):
        return False
    parts = PurePosixPath(path).parts
    return len(parts) <= 8 and all(p not in ("", ".", "..") and not p.startswith(".")
                                   for p in parts)


def _embedding_model(text: str | None, shown: str) -> tuple[str, int, str]:
    """`name:version@sha256:<hex>` from a library's annotation."""
    if not text:
        raise ArtifactError(f"{shown}: a library artifact must name its embedding model "
                            f"({keys.EMBEDDING_MODEL})")
    head, _, digest = text.partition("@sha256:")
    name, _, version_text = head.rpartition(":")
    version = parse_version(version_text)
    if model_name_problem(name) or version is None or len(digest) != 64:
        raise ArtifactError(f"{shown}: annotation {keys.EMBEDDING_MODEL} must be "
                            "name:version@sha256:<64 hex digits>")
    return name, version, digest


def _check_recorded(artifact: Artifact, shown: str) -> None:
    """The annotations' record of the version's files (sha256 each) matches the layers."""
    recorded = recorded_files(artifact.annotations)
    carried = {layer.path: layer.digest.removeprefix("sha256:") for layer in artifact.files}
    if recorded and recorded != carried:
        differing = sorted(set(recorded) ^ set(carried)) or sorted(
            path for path in recorded if recorded[path] != carried.get(path))
        raise ArtifactError(f"{shown}: the layers do not match the files its annotations "
                            f"record ({', '.join(repr(p[:60]) for p in differing[:3])})")

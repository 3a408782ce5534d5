"""`zooserve push`: one repository version (and, for a library, its embedding model) to an
OCI registry as an artifact (zooserve.registry.artifact). Blobs the repository already has
are not sent again; the manifest goes last, so a reference never names half an artifact."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from zooserve.registry.artifact import EMPTY_CONFIG, build_manifest
from zooserve.registry.distribution import OCI_MANIFEST, RegistryClient
from zooserve.registry.reference import Reference
from zooserve.repository.layout import (
    MODEL_FILE,
    find_version,
    library_embedding_model,
    sha256_of_file,
)


class PushError(ValueError):
    """The version cannot be pushed as asked; one line."""


@dataclass(frozen=True)
class Pushed:
    reference: Reference  # with the tag it was pushed under
    digest: str  # the manifest's
    files: int
    size: int  # bytes of every file carried
    sent: int  # bytes uploaded (blobs the registry lacked)
    seconds: float


def embedding_model_of(root: Path, library_folder: Path) -> tuple[Path, str, int] | None:
    """A library's embedding model version folder, checked to be the very model the library
    was built with (its model.onnx sha256); None for a version that is no library."""
    try:
        named = library_embedding_model(library_folder)
    except ValueError as exc:
        raise PushError(str(exc)) from None
    if named is None:
        return None
    name, version, sha256 = named
    model_file = root / name / str(version) / MODEL_FILE
    if not model_file.is_file():
        raise PushError(f"the library's embedding model {name} version {version} is not "
                        f"under '{root}': a library travels with its model")
    if sha256_of_file(model_file) != sha256:
        raise PushError(f"{model_file} is not the model the library was built with "
                        "(its sha256 differs from the one library.json records)")
    return model_file.parent, name, version


def push_version(client: RegistryClient, root: Path, spec: str,
                 reference: Reference) -> Pushed:
    """Push `spec` (NAME[:VERSION]) to `reference`; a reference without a tag gets the
    version number as its tag."""
    if reference.digest:
        raise PushError(f"{reference}: push to a tag, not a digest (the digest is the "
                        "registry's answer)")
    started = time.monotonic()
    try:
        name, version, folder = find_version(root, spec)
    except (ValueError, LookupError) as exc:
        raise PushError(str(exc)) from None
    if not reference.tag:
        reference = reference.with_tag(str(version))
    embedding = embedding_model_of(root, folder)
    manifest, uploads = build_manifest(folder, name, version, embedding)
    sent = 0
    for upload in dict((u.digest, u) for u in uploads).values():
        if client.blob_exists(reference.repository, upload.digest):
            continue
        if upload.path is None:
            _upload_bytes(client, reference.repository, upload.digest, EMPTY_CONFIG)
        else:
            client.upload_blob(reference.repository, upload.digest, upload.size, upload.path)
        sent += upload.size
    digest = client.put_manifest(reference.repository, reference.tag, manifest, OCI_MANIFEST)
    files = uploads[1:]
    return Pushed(reference, digest, len(files), sum(u.size for u in files), sent,
                  time.monotonic() - started)


def _upload_bytes(client: RegistryClient, repository: str, digest: str, data: bytes) -> None:
    import tempfile

    with tempfile.NamedTemporaryFile() as holder:
        holder.write(data)
        holder.flush()
        client.upload_blob(repository, digest, len(data), Path(holder.name))

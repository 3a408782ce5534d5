"""What a shared version says about itself: the OCI annotations of a pushed artifact, and the
same keys as labels of a model-only image (`zooserve image build --model-only`), so that
`skopeo inspect`, `docker image inspect` and a registry's web page show what the card says
before anything is pulled.

The keys follow the OCI image spec's pre-defined annotations where one fits
(`org.opencontainers.image.*`) and `io.zooserve.*` for the rest. Every value is one line of
bounded length: a card is the sharer's text, and registries limit a manifest's size."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from zooserve.repository.layout import LIBRARY_FILE, read_card, sha256_of_file

TITLE = "org.opencontainers.image.title"
DESCRIPTION = "org.opencontainers.image.description"
VERSION = "org.opencontainers.image.version"
CREATED = "org.opencontainers.image.created"
REVISION = "org.opencontainers.image.revision"
SOURCE = "io.zooserve.source"
MODEL_NAME = "io.zooserve.model.name"
MODEL_VERSION = "io.zooserve.model.version"
KIND = "io.zooserve.kind"  # "model" or "library"
TASK = "io.zooserve.task"
METRICS = "io.zooserve.metrics"
FILES = "io.zooserve.files"  # JSON: relative path -> sha256, every file of the version
# A library's embedding model, as `name:version@sha256:<model.onnx digest>`.
EMBEDDING_MODEL = "io.zooserve.embedding-model"

VALUE_MAX = 512  # characters of a free-text value (a description, a source line)


def _line(text: object) -> str:
    """One line, at most VALUE_MAX characters."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= VALUE_MAX else flat[: VALUE_MAX - 3] + "..."


def metrics_line(card: Mapping) -> str:
    """The card's test metrics as `accuracy=0.971 loss=0.0456`, the primary one first, with
    its baseline when the card records one: `accuracy=0.971 (baseline 0.44)`."""
    metrics = card.get("metrics")
    if not isinstance(metrics, Mapping):
        return ""
    primary = card.get("primary_metric")
    names = sorted(metrics, key=lambda name: (name != primary, name))
    parts = []
    for name in names:
        value = metrics[name]
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        part = f"{name}={value:.4g}"
        baseline = _baseline(card, name)
        if baseline is not None:
            part += f" (baseline {baseline:.4g})"
        parts.append(part)
    return _line(" ".join(parts))


def _baseline(card: Mapping, metric: str) -> float | None:
    baselines = card.get("baselines")
    if isinstance(baselines, Mapping):
        for value in baselines.values():
            found = value.get(metric) if isinstance(value, Mapping) else None
            if isinstance(found, int | float) and not isinstance(found, bool):
                return float(found)
    return None


def _source(card: Mapping) -> str:
    """Where the model came from, in words: the file it was exported from, or the data set
    it was trained on, or a library's spectra file."""
    source = card.get("source")
    if isinstance(source, Mapping):
        exported = source.get("file") or source.get("path")
        if exported:
            return _line(f"exported from {exported} (sha256 {source.get('sha256', '?')})")
    dataset = card.get("dataset")
    if isinstance(dataset, Mapping) and dataset.get("source"):
        return _line(f"trained on {dataset.get('name', '?')}: {dataset['source']}")
    return ""


def version_annotations(version_dir: Path, name: str, version: int,
                        embedding_model: str | None = None,
                        files: Mapping[str, str] | None = None) -> dict[str, str]:
    """The annotations (or image labels) describing one repository version: what its card
    says, and the sha256 of every file it holds (see `version_files`). `embedding_model`
    names a library's model as `name:version@sha256:...`. `files`: those sha256 (relative
    path -> hex), when the caller has just computed them; read from the folder otherwise."""
    card = read_card(version_dir)
    if files is None:
        files = {name: sha256_of_file(path) for name, path in version_files(version_dir)}
    annotations = {
        TITLE: name,
        MODEL_NAME: name,
        MODEL_VERSION: str(version),
        VERSION: str(version),
        KIND: "library" if (version_dir / LIBRARY_FILE).is_file() else "model",
        FILES: json.dumps(files, sort_keys=True, separators=(",", ":")),
    }
    optional = {
        DESCRIPTION: _line(card.get("description", "")),
        CREATED: _line(card.get("created", "")),
        REVISION: _line(card.get("git_commit", "")),
        SOURCE: _source(card),
        TASK: _line(card.get("task", "")),
        METRICS: metrics_line(card),
        EMBEDDING_MODEL: embedding_model or "",
    }
    annotations.update({key: value for key, value in optional.items() if value})
    return annotations


def version_files(version_dir: Path) -> list[tuple[str, Path]]:
    """Every file a shared version carries, by relative path (`/` between folders), sorted:
    all of the folder's regular files, the card and a signature included. Hidden entries
    (a leading `.`) are left out: they are no part of a version (publish.py's staging)."""
    found = []
    for path in sorted(version_dir.rglob("*")):
        name = path.relative_to(version_dir).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in name.split("/")):
            found.append((name, path))
    return found


def recorded_files(annotations: Mapping[str, str]) -> dict[str, str]:
    """FILES read back from annotations (a pulled manifest's, an image's labels); {} when
    absent or not the expected JSON object of names to hex digests."""
    try:
        files = json.loads(annotations.get(FILES, "{}"))
    except json.JSONDecodeError:
        return {}
    if not isinstance(files, dict):
        return {}
    return {str(k): str(v) for k, v in files.items() if isinstance(v, str)}


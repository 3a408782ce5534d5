"""What the repository needs to load a version without knowing what it is: the table of model
kinds, keyed by the file a version folder holds (`model.onnx`: an ONNX model; `library.json`:
a spectral library), each loading with the same `LoadOptions` (`zooserve.serving.load_options`).

The table is filled where a server is put together (`zooserve.serving.server.model_kinds`,
which the Bento uses too) and handed to the repository, which names no kind: a new kind of
model is one entry there, and a test registers a fake one the same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from zooserve.serving.load_options import LoadOptions

if TYPE_CHECKING:
    from zooserve.repository.layout import ModelEntry
    from zooserve.serving.loaded_model import LoadedModel


# Loads one version: (where it is, the server's options, the sha256 of the files the
# repository checked just before) -> the model that serves it. Raises for a version that
# cannot serve; DeviceUnavailable when the device the options insist on cannot be had.
ModelKind = Callable[["ModelEntry", LoadOptions, Mapping[str, str]], "LoadedModel"]

# The file a version folder holds -> the kind that loads it. Where a folder holds several of
# these files, the first in the table's order decides.
ModelKinds = Mapping[str, ModelKind]


def served_file(kinds: ModelKinds, version_dir: Path) -> Path | None:
    """The file of `version_dir` that says its kind (the table's first found), or None."""
    for name in kinds:
        if (version_dir / name).is_file():
            return version_dir / name
    return None

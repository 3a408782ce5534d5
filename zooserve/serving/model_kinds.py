"""What the repository needs to load a version without knowing what it is: the options every
load takes, made once from the settings, and the table of model kinds, keyed by the file a
version folder holds (`model.onnx`: an ONNX model; `library.json`: a spectral library).

The table is filled where a server is put together (`zooserve.serving.server.model_kinds`,
which the Bento uses too) and handed to the repository, which names no kind: a new kind of
model is one entry there, and a test registers a fake one the same way."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zooserve.serving.inline_runs import INLINE_BELOW_NS
from zooserve.serving.serving_config import DEFAULT_MAX_QUEUE_SIZE

if TYPE_CHECKING:
    from zooserve.repository.layout import ModelEntry
    from zooserve.serving.loaded_model import LoadedModel
    from zooserve.serving.onnx_sessions import SessionFactory


@dataclass(frozen=True)
class LoadOptions:
    """How the server loads every version: the same for all of them, whatever their kind.
    A version's serving.json may still narrow some (its queue size, its thread count)."""

    device: str = "auto"  # auto, cpu, cuda or tensorrt
    max_batch_size: int = 1024
    intra_op_threads: int = 0  # ONNX Runtime intra-op threads per session (0: its default)
    cache_dir: Path | None = None  # where optimised graphs are kept; None: no cache
    # Runs estimated cheaper than this are made on the event loop (`inline_runs`).
    inline_below_ns: int = INLINE_BELOW_NS
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    # Makes the ONNX Runtime sessions (None: the real ones); tests stand in for a GPU with it.
    create: SessionFactory | None = None


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

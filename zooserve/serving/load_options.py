"""What every load of a version takes, whatever its kind: made once from the settings where
the server is put together (`DataPlane.from_settings`), handed to the repository, and from it
to each model kind's load (`zooserve.serving.model_kinds`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zooserve.serving.inline_runs import INLINE_BELOW_NS
from zooserve.serving.serving_config import DEFAULT_MAX_QUEUE_SIZE

if TYPE_CHECKING:
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

"""What every load of a version takes, whatever its kind: made once from the settings where
the server is put together (`DataPlane.from_settings`), handed to the repository, and from it
to each model kind's load (`zooserve.serving.model_kinds`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from zooserve.repository.signing import SigningError, verify_keys
from zooserve.serving.inline_runs import INLINE_BELOW_NS
from zooserve.serving.serving_config import DEFAULT_MAX_QUEUE_SIZE
from zooserve.serving.settings import SettingsError, named

if TYPE_CHECKING:
    from zooserve.serving.onnx_sessions import SessionFactory

log = logging.getLogger(__name__)


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
    # Public keys (PEM files, checked): when any, a version loads only if its model.sig
    # verifies against one of them (zooserve.repository.signing); empty: signed or not.
    verify_keys: tuple[Path, ...] = ()


def signature_keys(paths: Iterable[Path]) -> tuple[Path, ...]:
    """The `verify_key` setting's keys, folders expanded and each checked now, at start:
    SettingsError (one line naming the flag and variable) for one that cannot be used, or
    when the `signing` extra is missing. Nothing given: ()."""
    paths = list(paths)
    if not paths:
        return ()
    setting = named("verify_key")
    try:
        keys = tuple(verify_keys(paths))
    except SigningError as exc:
        raise SettingsError(f"{setting.flag} / {setting.variable}: {exc}") from None
    log.info("serving only versions signed by one of %d keys: %s", len(keys),
             ", ".join(str(key) for key in keys))
    return keys

"""The loaded models of a repository folder (its layout on disk is `service.layout`):
one ONNX Runtime session per (name, version). A client that names no version gets the
highest one."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from service.errors import not_found
from service.layout import parse_version, scan_repository
from service.runtime import INLINE_BELOW_NS, DeviceUnavailable, LoadedModel, SessionFactory
from service.serving_config import DEFAULT_MAX_QUEUE_SIZE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: int
    state: str  # READY or UNAVAILABLE
    reason: str


def describe_serving(model: LoadedModel) -> str:
    """How the model is served, for its startup log line."""
    if model.max_batch_size:
        batching = model.config.dynamic_batching
        how = (f"batches up to {model.max_batch_size} rows, waiting up to "
               f"{batching.max_queue_delay_us} us")
    else:
        how = "one request per run"
    if model.run_ns:
        run = (f"warm-up {model.run_ns / 1000:.0f} us for one row, "
               f"{model.row_ns / 1000:.0f} us per more")
    else:
        run = "not timed"
    if model.runs_inline(1):
        where = f"runs up to {model.inline_below_ns / 1e6:g} ms on the event loop"
    else:
        where = "runs on an inference thread"
    return f"{how}, up to {model.max_queue_size} in flight, {run}, {where}"


class ModelRepository:
    """The loaded models of one repository folder."""

    def __init__(
        self,
        root: Path,
        device: str = "auto",
        max_batch_size: int = 1024,
        intra_op_threads: int = 0,
        create: SessionFactory | None = None,  # tests stand in for ONNX Runtime with it
        cache_dir: Path | None = None,
        inline_below_ns: int = INLINE_BELOW_NS,
        require_all: bool = False,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
    ) -> None:
        self.max_queue_size = max_queue_size
        self.root = root
        self.require_all = require_all
        self.device = device
        self.max_batch_size = max_batch_size
        self.intra_op_threads = intra_op_threads
        self._create = create
        self.cache_dir = cache_dir
        self.inline_below_ns = inline_below_ns
        self._models: dict[str, dict[int, LoadedModel]] = {}
        self._failed: dict[tuple[str, int], str] = {}

    def load(self) -> None:
        """Load every model version found; a version that fails is logged and reported
        as UNAVAILABLE (and keeps the server unready), the others still serve.

        DeviceUnavailable (`cuda` asked for, not obtained) is not one model's failure but
        the whole server's: it propagates, and the server does not start."""
        for entry in scan_repository(self.root):
            try:
                model = LoadedModel.load(
                    entry.name,
                    entry.version,
                    entry.path,
                    self.device,
                    self.max_batch_size,
                    intra_op_threads=self.intra_op_threads,
                    create=self._create,
                    cache_dir=self.cache_dir,
                    inline_below_ns=self.inline_below_ns,
                    max_queue_size=self.max_queue_size,
                )
            except DeviceUnavailable:
                raise
            except Exception as exc:  # a broken file must not take the other models down
                reason = f"{type(exc).__name__}: {exc}"
                log.error("could not load %s version %d: %s", entry.name, entry.version, reason)
                self._failed[(entry.name, entry.version)] = reason
                continue
            self._models.setdefault(entry.name, {})[entry.version] = model
            log.info(
                "loaded %s version %d from %s on %s (providers %s; intra-op threads %s); "
                "inputs %s; outputs %s; %s",
                entry.name,
                entry.version,
                entry.path,
                model.device,
                ",".join(model.providers),
                model.intra_op_threads or "ONNX Runtime's default",
                ", ".join(f"{s.name} {s.describe()}" for s in model.inputs),
                ", ".join(f"{s.name} {s.describe()}" for s in model.outputs),
                describe_serving(model),
            )
        if not self._models and not self._failed:
            log.warning("no models found under %s", self.root)

    @property
    def ready(self) -> bool:
        """Some model to serve (with `require_all`: every model version found loaded), and on
        the GPU wherever `cuda` insisted on one (loading already refuses otherwise; this keeps
        readiness honest). A model that failed is reported by its own readiness, health name
        and index row; it does not make the others unready unless `require_all` says so."""
        if not self._models:  # a server with nothing to serve is not ready
            return False
        if self.require_all and self._failed:
            return False
        on_gpu_only = self.device in ("cuda", "tensorrt")
        return not on_gpu_only or all(m.device == "GPU" for m in self.models())

    def names(self) -> list[str]:
        return sorted(self._models)

    def failed_names(self) -> list[str]:
        """Models found on disk of which no version loaded."""
        return sorted({n for n, _ in self._failed} - set(self._models))

    def versions(self, name: str) -> list[int]:
        return sorted(self._models.get(name, {}))

    def models(self) -> list[LoadedModel]:
        return [m for name in self.names() for _, m in sorted(self._models[name].items())]

    def get(self, name: str, version: str | int | None = None) -> LoadedModel:
        versions = self._models.get(name)
        if not versions:
            if any(n == name for n, _ in self._failed):
                raise not_found(f"model '{name}' failed to load and is unavailable")
            known = ", ".join(self.names()) or "none"
            raise not_found(f"model '{name}' not found; models served: {known}")
        if version in (None, ""):
            return versions[max(versions)]
        text = str(version)
        number = parse_version(text)
        if number not in versions:
            shown = text if len(text) <= 40 else text[:40] + "..."
            raise not_found(
                f"model '{name}' has no version '{shown}'; versions served: "
                + ", ".join(str(v) for v in sorted(versions))
            )
        return versions[number]

    def index(self) -> list[IndexEntry]:
        rows = [IndexEntry(m.name, m.version, "READY", "") for m in self.models()]
        rows += [IndexEntry(n, v, "UNAVAILABLE", why) for (n, v), why in self._failed.items()]
        return sorted(rows, key=lambda r: (r.name, r.version))

"""The loaded models of a repository folder (its layout on disk is `zooserve.repository.layout`):
one served model per (name, version). A client that names no version gets the highest version
that is loaded. What a version is (an ONNX model, a spectral library) the repository does not
know: the table of model kinds it is given says, keyed by the file the version folder holds
(`zooserve.serving.model_kinds`), and every kind loads with the same `LoadOptions`.

The set of served models can change while serving (`zooserve.serving.model_control` decides when):
`plan` looks at the folder and says which versions are new, changed or gone, `attempt`
loads one version (both off the event loop: loading takes ONNX Runtime time), and `apply`
switches the served set in one step on the event loop. A version that fails to load never
replaces one that serves. A version taken out of service is handed to `retiring`
(`zooserve.serving.retiring`), which holds it until its in-flight requests are answered and
then closes it.

Before a version is loaded, every file it is loaded from is checked to lie inside the
repository folder and to match the sha256 its card records (`zooserve.serving.repository_files`),
and, when the load options hold verification keys, its signature is verified against them
(`zooserve.repository.signing`): a version that is unsigned, signed by another key or changed
since signing is UNAVAILABLE with that reason, at start, on poll and on an explicit load."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from zooserve.protocol.errors import not_found, one_line, quoted
from zooserve.repository.layout import (
    CARD_FILE,
    SERVING_FILE,
    SIGNATURE_FILE,
    ModelEntry,
    parse_version,
    version_folders,
)
from zooserve.repository.signing import verify_version
from zooserve.serving.inline_runs import runs_inline
from zooserve.serving.load_options import LoadOptions
from zooserve.serving.loaded_model import LoadedModel
from zooserve.serving.model_kinds import ModelKinds, served_file
from zooserve.serving.onnx_sessions import DeviceUnavailable
from zooserve.serving.repository_files import Boundary, CheckedFiles, check_version
from zooserve.serving.retiring import RetiringVersions

log = logging.getLogger(__name__)

READY = "READY"
UNAVAILABLE = "UNAVAILABLE"  # found, not served: the reason says why
UNLOADING = "UNLOADING"  # taken out of service, still answering the requests it had taken

Key = tuple[str, int]
# Size, modification time and inode of each file a version is loaded from (model.onnx, its
# card, its signature, the model's serving.json; None where absent): a cheap sign that
# something changed (a version signed in place is looked at again).
Stamp = tuple[tuple[int, int, int] | None, ...]


@dataclass(frozen=True)
class IndexEntry:
    name: str
    version: int
    state: str  # READY, UNAVAILABLE or UNLOADING
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
    if runs_inline(model, 1):
        where = f"runs up to {model.inline_below_ns / 1e6:g} ms on the event loop"
    else:
        where = "runs on an inference thread"
    return f"{how}, up to {model.max_queue_size} waiting to run, {run}, {where}"


def stamp_of(model_file: Path) -> Stamp:
    stamps = []
    folder = model_file.parent
    for path in (model_file, folder / CARD_FILE, folder / SIGNATURE_FILE,
                 folder.parent / SERVING_FILE):
        try:
            status = path.stat()
        except OSError:
            stamps.append(None)
        else:
            stamps.append((status.st_size, status.st_mtime_ns, status.st_ino))
    return tuple(stamps)


@dataclass
class Plan:
    """What a look at the folder found to do."""

    load: list[tuple[ModelEntry, Stamp]] = field(default_factory=list)
    remove: list[Key] = field(default_factory=list)
    names: set[str] = field(default_factory=set)  # the names looked at


@dataclass
class Attempt:
    """One version's load: a model, or the reason it failed; `unchanged` when the files'
    contents turned out the same as those of the copy already served."""

    key: Key
    stamp: Stamp
    digest: str = ""
    model: LoadedModel | None = None
    reason: str = ""
    unchanged: bool = False


class _FirstTimeOnly(logging.Filter):
    """Lets each distinct message through once: the layout's warnings about a stray folder
    would otherwise come back at every rescan."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text in self._seen:
            return False
        if len(self._seen) < 10_000:
            self._seen.add(text)
        return True


_LAYOUT_WARNINGS_ONCE = _FirstTimeOnly()


class ModelRepository:
    """The loaded models of one repository folder."""

    def __init__(
        self,
        root: Path,
        kinds: ModelKinds,
        options: LoadOptions | None = None,
        require_all: bool = False,
    ) -> None:
        """`kinds`: which kind of model loads a version, by the file its folder holds (the
        first of the table's files found decides); `options`: how every version loads."""
        if not kinds:
            raise ValueError("a repository needs at least one model kind to load")
        self.root = root
        self.kinds = dict(kinds)
        self.options = options or LoadOptions()
        self.require_all = require_all
        # Served: replaced as a whole (never changed in place) so a reader always sees one
        # consistent set.
        self._models: dict[str, dict[int, LoadedModel]] = {}
        self._failed: dict[Key, str] = {}  # found, not served
        self._stale: dict[Key, str] = {}  # served from an earlier copy: why the newer failed
        self._stamps: dict[Key, Stamp] = {}  # the files the current state came from
        self._digests: dict[Key, str] = {}  # the contents the served copy came from
        self._pending: dict[Key, Stamp] = {}  # changed files seen once, not yet settled
        self._pending_removal: set[Key] = set()  # gone once, not yet confirmed
        self._unloaded: dict[str, list[int]] = {}  # unloaded on request: their versions
        # Out of service, answering the requests they had taken on; closed once answered.
        self.retiring = RetiringVersions()
        self._warned: set[str] = set()  # warnings about a version's files, given once

    # Loading at startup

    def load(self) -> None:
        """Load every model version found; a version that fails is logged and reported
        as UNAVAILABLE, the others still serve.

        DeviceUnavailable (`cuda` asked for, not obtained) is not one model's failure but
        the whole server's: it propagates, and the server does not start."""
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"models folder '{self.root}' does not exist or is not a folder")
        plan = self.plan(None, wait_for_settled_files=False)
        self.apply(plan, [self.attempt(entry, stamp, startup=True) for entry, stamp in plan.load])
        if not self._models and not self._failed:
            log.warning("no models found under %s", self.root)

    # Changing the served set: plan and attempt run off the event loop, apply on it

    def names_on_disk(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith("."))

    def has_folder(self, name: str) -> bool:
        return name in self.names_on_disk()

    def plan(self, names: Iterable[str] | None, wait_for_settled_files: bool,
             retry_failed: bool = False) -> Plan:
        """Which versions to load (new, or their files changed) and which to take out of
        service (gone from disk), for `names` (None: every model on disk or served, but
        those unloaded on request).

        With `wait_for_settled_files` (polling), files seen changed are loaded only once a
        second look finds them unchanged since the first, and a version is removed only when
        two looks in a row miss it: a version still being copied is not loaded half-written,
        and one renamed over is not dropped in between. `retry_failed`: versions that failed
        are tried again even if their files did not change (an explicit load)."""
        if names is None:
            scope = set(self.names_on_disk()) | set(self._models) | {n for n, _ in self._failed}
            scope -= set(self._unloaded)
        else:
            scope = set(names)
        plan = Plan(names=scope)
        for name in sorted(scope):
            on_disk = self._version_files(name)
            for version, model_file in sorted(on_disk.items()):
                key = (name, version)
                self._pending_removal.discard(key)
                stamp = stamp_of(model_file)
                known = key in self._failed or version in self._models.get(name, {})
                if known and self._stamps.get(key) == stamp and not (
                        retry_failed and key in self._failed):
                    self._pending.pop(key, None)
                    continue
                if wait_for_settled_files and self._pending.get(key) != stamp:
                    self._pending[key] = stamp  # load it when the next look sees the same
                    continue
                self._pending.pop(key, None)
                plan.load.append((ModelEntry(name, version, model_file), stamp))
            for key in [k for k in self._pending if k[0] == name and k[1] not in on_disk]:
                del self._pending[key]  # seen once, gone before it settled
            gone = [k for k in self._known_keys(name) if k[1] not in on_disk]
            for key in gone:
                self._pending.pop(key, None)
                if wait_for_settled_files and key not in self._pending_removal:
                    self._pending_removal.add(key)
                    continue
                self._pending_removal.discard(key)
                plan.remove.append(key)
        return plan

    def _version_files(self, name: str) -> dict[int, Path]:
        layout_log = logging.getLogger("zooserve.repository.layout")
        layout_log.addFilter(_LAYOUT_WARNINGS_ONCE)
        model_dir = self.root / name
        files = {}
        for version, folder in version_folders(model_dir).items():
            found = served_file(self.kinds, folder)
            if found is None:
                self._warn_once(f"skipping {folder}: no {' or '.join(self.kinds)} in it")
            else:
                files[version] = found
        # A version folder that is a link out of the repository is listed (and refused when
        # it is loaded) whether or not what it points to exists or holds a model: what is
        # outside never decides what the index shows.
        boundary = Boundary(self.root)
        links = [p for p in model_dir.iterdir() if p.is_symlink()] if model_dir.is_dir() else []
        for link in links:
            version = parse_version(link.name)
            if version is not None and version not in files and not boundary.contains(link):
                files[version] = link / next(iter(self.kinds))
        return files

    def _known_keys(self, name: str) -> list[Key]:
        keys = {(name, v) for v in self._models.get(name, {})}
        keys |= {k for k in self._failed if k[0] == name}
        return sorted(keys)

    def attempt(self, entry: ModelEntry, stamp: Stamp, startup: bool = False) -> Attempt:
        """Load one version, checking its files against the repository's boundary and its
        card first. Never raises for a broken version (the Attempt holds the reason), but at
        `startup` for DeviceUnavailable, which stops the server."""
        key = (entry.name, entry.version)
        attempt = Attempt(key, stamp)
        try:
            checked = check_version(self.root, entry.path)
            if self.options.verify_keys:  # signed by one of them, as every file is now
                verify_version(entry.folder, self.options.verify_keys)
            self._warn_about_files(entry, checked)
            attempt.digest = checked.digest()
            if not startup and attempt.digest == self._digests.get(key) \
                    and entry.version in self._models.get(entry.name, {}):
                attempt.unchanged = True
                return attempt
            load = self.kinds.get(entry.path.name)
            if load is None:
                raise RuntimeError(f"no model kind serves {entry.path.name}")
            model = load(entry, self.options, checked.hashes)
            if stamp_of(entry.path) != stamp:
                raise RuntimeError("its files changed while it loaded; it is tried again once "
                                   "they settle")
            if not startup and model.warm_up_problem and self._models.get(entry.name):
                # At startup such a model serves (on a thread); here a version that does
                # serve is kept rather than replaced by one that cannot run on zeros.
                raise RuntimeError(f"warm-up failed: {model.warm_up_problem}")
            attempt.model = model
        except DeviceUnavailable as exc:
            if startup:
                raise
            attempt.reason = f"DeviceUnavailable: {one_line(exc)}"
        except Exception as exc:  # a broken file must not take the other models down
            attempt.reason = f"{type(exc).__name__}: {one_line(exc)}"
        return attempt

    def _warn_about_files(self, entry: ModelEntry, checked: CheckedFiles) -> None:
        warnings = []
        if checked.unchecked:
            warnings.append(f"its card has no sha256 for {entry.path.name}; loading it "
                            "unchecked")
        if checked.absent:
            warnings.append(f"its card records {', '.join(map(repr, checked.absent))}, not "
                            "in its folder and not needed to serve it")
        for warning in warnings:
            self._warn_once(f"{entry.name} version {entry.version}: {warning}")

    def _warn_once(self, text: str) -> None:
        if text not in self._warned:
            self._warned.add(text)
            log.warning("%s", text)

    def apply(self, plan: Plan, attempts: list[Attempt],
              unload_names: Iterable[str] = ()) -> list[LoadedModel]:
        """Switch the served set in one step (call it on the event loop): loaded versions
        replace or join the served ones, failed ones are reported and never replace a
        served one, removed ones and those of `unload_names` leave. Returns the versions
        taken out of service, which `retiring` now holds until their requests are answered."""
        models = {name: dict(versions) for name, versions in self._models.items()}
        retired: list[LoadedModel] = []
        for key in plan.remove:
            self._forget(key)
            old = models.get(key[0], {}).pop(key[1], None)
            if old is not None:
                retired.append(old)
                log.info("%s version %d is gone from %s: taken out of service", key[0],
                         key[1], self.root)
        for attempt in attempts:
            name, version = attempt.key
            self._stamps[attempt.key] = attempt.stamp
            if attempt.unchanged:
                continue
            serving = models.get(name, {}).get(version)
            if attempt.model is None:
                if serving is not None:
                    self._stale[attempt.key] = (
                        f"the copy loaded earlier serves; the files now there failed to "
                        f"load: {attempt.reason}")
                    log.error("could not reload %s version %d: %s; the copy loaded earlier "
                              "still serves", name, version, attempt.reason)
                else:
                    self._failed[attempt.key] = attempt.reason
                    log.error("could not load %s version %d: %s", name, version,
                              attempt.reason)
                continue
            models.setdefault(name, {})[version] = attempt.model
            self._digests[attempt.key] = attempt.digest
            self._failed.pop(attempt.key, None)
            self._stale.pop(attempt.key, None)
            if serving is not None:
                retired.append(serving)
            _log_loaded(attempt.model, "reloaded" if serving is not None else "loaded")
        for name in unload_names:
            gone = models.pop(name, {})
            for version, old in sorted(gone.items()):
                retired.append(old)
                self._forget((name, version))
            self._unloaded[name] = sorted(gone) or self._unloaded.get(name, [])
        for name in plan.names:
            self._unloaded.pop(name, None)
        self._models = {name: versions for name, versions in models.items() if versions}
        self.retiring.take(retired)
        return retired

    def unload(self, name: str) -> list[LoadedModel]:
        """Take every version of `name` out of service (on the event loop); NOT_FOUND for a
        name neither served nor found. Returns the versions taken out."""
        if name not in self._models and not self._known_keys(name) \
                and name not in self._unloaded:
            raise not_found(f"model {quoted(name)} is not loaded; models served: "
                            + (", ".join(self.names()) or "none"))
        for key in [k for k in self._failed if k[0] == name]:
            self._forget(key)
        return self.apply(Plan(), [], unload_names=[name])

    def _forget(self, key: Key) -> None:
        for table in (self._failed, self._stale, self._stamps, self._digests, self._pending):
            table.pop(key, None)
        self._pending_removal.discard(key)

    # Reading the served set

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
        on_gpu_only = self.options.device in ("cuda", "tensorrt")
        return not on_gpu_only or all(m.device == "GPU" for m in self.models())

    def names(self) -> list[str]:
        return sorted(self._models)

    def failed_names(self) -> list[str]:
        """Models found on disk of which no version loaded."""
        return sorted({n for n, _ in self._failed} - set(self._models))

    def versions(self, name: str) -> list[int]:
        return sorted(self._models.get(name, {}))

    def models(self) -> list[LoadedModel]:
        models = self._models
        return [m for name in sorted(models) for _, m in sorted(models[name].items())]

    def get(self, name: str, version: str | int | None = None) -> LoadedModel:
        # Names and versions are the client's: quoted (repr, a bounded prefix) in messages.
        versions = self._models.get(name)
        if not versions:
            if any(n == name for n, _ in self._failed):
                raise not_found(f"model {quoted(name)} failed to load and is unavailable")
            if name in self._unloaded:
                raise not_found(f"model {quoted(name)} was unloaded; load it again to serve it")
            known = ", ".join(self.names()) or "none"
            raise not_found(f"model {quoted(name)} not found; models served: {known}")
        if version in (None, ""):
            return versions[max(versions)]
        text = str(version)
        number = parse_version(text)
        if number not in versions:
            raise not_found(
                f"model {quoted(name)} has no version {quoted(text)}; versions served: "
                + ", ".join(str(v) for v in sorted(versions))
            )
        return versions[number]

    def index(self) -> list[IndexEntry]:
        """Every version known: READY (the reason, if any, says a newer copy failed and
        this one still serves), UNAVAILABLE with the reason (failed, or unloaded), and
        UNLOADING while a version taken out of service still answers its requests."""
        served = self._models
        rows = [IndexEntry(m.name, m.version, READY, self._stale.get((m.name, m.version), ""))
                for m in self.models()]
        rows += [IndexEntry(n, v, UNAVAILABLE, why) for (n, v), why in self._failed.items()]
        draining = {(m.name, m.version) for m in self.retiring.models()
                    if m.version not in served.get(m.name, {})}
        rows += [IndexEntry(n, v, UNLOADING, "answering the requests it had taken on")
                 for n, v in sorted(draining)]
        rows += [IndexEntry(n, v, UNAVAILABLE, "unloaded")
                 for n, versions in self._unloaded.items() for v in versions
                 if (n, v) not in draining and v not in served.get(n, {})]
        return sorted(rows, key=lambda r: (r.name, r.version))


def _log_loaded(model: LoadedModel, verb: str) -> None:
    log.info(
        "%s %s version %d from %s on %s (providers %s; intra-op threads %s); "
        "inputs %s; outputs %s; %s",
        verb,
        model.name,
        model.version,
        model.path,
        model.device,
        ",".join(model.providers),
        model.intra_op_threads or "ONNX Runtime's default",
        ", ".join(f"{s.name} {s.describe()}" for s in model.inputs),
        ", ".join(f"{s.name} {s.describe()}" for s in model.outputs),
        describe_serving(model),
    )


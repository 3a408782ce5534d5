"""Changing the served models while serving, as Triton's --model-control-mode:

- `none`: the models found at startup, until the process ends. Load and unload requests are
  refused (UNAVAILABLE, saying which setting allows them) and SIGHUP is logged and ignored.
- `explicit`: every model found at startup is loaded (Triton's `--load-model=*`); then
  RepositoryModelLoad re-reads one model's folder (every version: new, changed and removed
  ones) and RepositoryModelUnload takes every version of a name out of service. SIGHUP
  re-reads every model but those unloaded.
- `poll`: the folder is looked at every `poll_interval` seconds, and SIGHUP looks at once.
  A version whose files changed since the last look waits for the next one: it is loaded only
  when two looks in a row see the same sizes and modification times, so a version still
  being copied is not loaded half-written. Copying to a hidden folder (`.v2`) and renaming it
  into place is safer still: a rename is atomic, and hidden folders are never read.

Loading runs on a thread, off the event loop (ONNX Runtime takes its time), then the served
set switches in one step. A request that already holds the old version finishes on it; the
old version is held by the repository's `retiring` (`zooserve.serving.retiring`) and closed
(its batchers closed, the references dropped, so its session goes) once its in-flight count
is 0. A version that fails to load (not ONNX, a sha256 that does not
match its card, a failed warm-up while another version serves) never replaces one that
serves: the reason is logged and shown in the repository index.

The core only: the frontends translate load, unload and the index to their protocols."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping

from zooserve.protocol.errors import invalid_argument, not_found, quoted, unavailable
from zooserve.serving.loaded_model import LoadedModel
from zooserve.serving.repository import Attempt, ModelRepository

log = logging.getLogger(__name__)

NONE, EXPLICIT, POLL = "none", "explicit", "poll"
# A model name in a load or unload request names a folder: at most this long, no path.
MAX_NAME_LENGTH = 255


class ModelControl:
    """Loads, reloads and unloads models of one repository, one change at a time.

    `changed()` is awaited after every change (the DataPlane tells its frontends, which
    refresh health); `release(model)` closes what the DataPlane keeps for a version taken
    out of service (its batchers) and `in_flight(model)` is the DataPlane's count of its
    requests: both go to the repository's `retiring`, which closes the version once none is
    in flight; `serving()` is false once the server drains, and then the folder is no longer
    polled."""

    def __init__(
        self,
        repository: ModelRepository,
        mode: str = NONE,
        poll_interval: float = 5.0,
        changed: Callable[[], Awaitable[None]] | None = None,
        release: Callable[[LoadedModel], None] | None = None,
        serving: Callable[[], bool] | None = None,
        in_flight: Callable[[LoadedModel], int] | None = None,
    ) -> None:
        if mode not in (NONE, EXPLICIT, POLL):
            raise ValueError(f"unknown model control mode {mode!r}")
        self.repository = repository
        self.mode = mode
        self.poll_interval = poll_interval
        self._changed = changed
        self._serving = serving or (lambda: True)
        repository.retiring.answer_to(in_flight or (lambda model: 0),
                                      release or (lambda model: None))
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task] = set()
        self._poller: asyncio.Task | None = None

    @property
    def enabled(self) -> bool:
        return self.mode != NONE

    def start(self) -> None:
        """Start polling (in poll mode); call it on the event loop, once serving."""
        if self.mode == POLL and self._poller is None:
            self._poller = asyncio.get_running_loop().create_task(self._poll(),
                                                                  name="repository poll")
            log.info("model control poll: looking at %s every %g s for new, changed and "
                     "removed versions", self.repository.root, self.poll_interval)
        elif self.mode == EXPLICIT:
            log.info("model control explicit: models are loaded and unloaded on request "
                     "(RepositoryModelLoad / RepositoryModelUnload, POST "
                     "/v2/repository/models/NAME/load|unload); SIGHUP re-reads them")

    async def stop(self) -> None:
        for task in (self._poller, *self._tasks):
            if task is not None:
                task.cancel()
        self.repository.retiring.stop()

    # The requests

    async def load(self, name: str, parameters: Mapping[str, object] | None = None) -> None:
        """Load or reload every version of `name` from its folder. Raises NOT_FOUND when
        there is no such folder, INVALID_ARGUMENT when a version on disk failed to load
        (the versions that loaded serve; one that served before keeps serving) or when the
        request has parameters (`_check_load_parameters`)."""
        self._refuse_unless_explicit("load")
        _check_name(name)
        _check_load_parameters(parameters or {})
        async with self._one_change():
            if not await asyncio.to_thread(self.repository.has_folder, name):
                raise not_found(f"no model folder {quoted(name)} under "
                                f"{self.repository.root}")
            attempts = await self._change({name}, settled_only=False, retry_failed=True)
        failed = [a for a in attempts if a.model is None and not a.unchanged]
        if failed:
            raise invalid_argument(
                f"model {quoted(name)}: "
                + "; ".join(f"version {a.key[1]} failed to load: {a.reason}" for a in failed)
                + (f"; serving versions {', '.join(map(str, self.repository.versions(name)))}"
                   if self.repository.versions(name) else "; no version of it serves")
            )

    async def unload(self, name: str) -> None:
        """Take every version of `name` out of service; requests already taken on finish."""
        self._refuse_unless_explicit("unload")
        _check_name(name)
        async with self._one_change():
            retired = self.repository.unload(name)
            log.info("unloaded %s (versions %s) on request", name,
                     ", ".join(str(m.version) for m in retired) or "none loaded")
            await self._after()

    async def rescan(self, why: str = "SIGHUP") -> None:
        """Look at the folder now (poll, explicit); in `none` mode, say that it is ignored."""
        if not self.enabled:
            log.info("%s ignored: the server was started with --model-control none, which "
                     "keeps the models it started with; use --model-control poll or explicit "
                     "to pick up changes to %s", why, self.repository.root)
            return
        log.info("%s: looking at %s for new, changed and removed versions", why,
                 self.repository.root)
        try:
            async with self._one_change():
                await self._change(None, settled_only=False)
        except Exception:
            log.exception("rescan after %s failed", why)

    def rescan_soon(self, why: str = "SIGHUP") -> None:
        """`rescan` from a signal handler: run it as a task on the running loop."""
        task = asyncio.get_running_loop().create_task(self.rescan(why))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # How a change is made

    def _refuse_unless_explicit(self, verb: str) -> None:
        if self.mode == EXPLICIT:
            return
        if self.mode == POLL:
            raise unavailable(
                f"cannot {verb} models on request: the server polls its repository "
                "(--model-control poll) and follows the files; change the files, or start it "
                "with --model-control explicit")
        raise unavailable(
            f"cannot {verb} models on request: the server was started with --model-control "
            "none; start it with --model-control explicit (ZOOSERVE_MODEL_CONTROL=explicit) "
            "to load and unload models while it serves")

    def _one_change(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def _change(self, names: set[str] | None, settled_only: bool,
                      retry_failed: bool = False) -> list[Attempt]:
        """Look at the folder (for `names`, None: all), load what is new or changed on a
        thread, then switch the served set on the loop. Call it holding the lock."""
        repository = self.repository

        def prepare() -> tuple:
            plan = repository.plan(names, settled_only, retry_failed)
            return plan, [repository.attempt(entry, stamp) for entry, stamp in plan.load]

        plan, attempts = await asyncio.to_thread(prepare)
        if not plan.load and not plan.remove and names is None:
            return attempts  # nothing changed: nothing to tell
        repository.apply(plan, attempts)
        await self._after()
        return attempts

    async def _after(self) -> None:
        if self._changed is not None:
            await self._changed()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.poll_interval)
            if not self._serving():
                return
            try:
                async with self._one_change():
                    await self._change(None, settled_only=True)
            except Exception:  # a folder that vanished or cannot be read: try next time
                log.exception("polling %s failed", self.repository.root)


def _check_name(name: str) -> None:
    """A model name from a request names a folder under the repository: never a path."""
    if (not name or len(name) > MAX_NAME_LENGTH or name.startswith(".")
            or any(c in name for c in "/\\\0")):
        raise invalid_argument(
            f"model name {quoted(name)} is not a model folder's name (not empty, at most "
            f"{MAX_NAME_LENGTH} characters, no path separators, not starting with '.')")


def _check_load_parameters(parameters: Mapping[str, object]) -> None:
    """A load takes no parameters. Triton's `config` (a configuration to load the model
    with) and `file:<path>` (model files sent in the request) would each make the request
    say something the folder does not, and zooserve loads only what its repository folder
    holds and its cards vouch for: any parameter is refused by name rather than ignored, so
    a client never believes an override or an upload took effect."""
    if not parameters:
        return
    names = sorted(parameters)
    shown = ", ".join(quoted(n, 64) for n in names[:8])
    if len(names) > 8:
        shown += f" and {len(names) - 8} more"
    why = []
    if "config" in parameters:
        why.append("'config': a model's configuration comes from its folder (serving.json), "
                   "not the request")
    if any(n.startswith("file:") for n in names):
        why.append("'file:...': model files are not uploaded with a load; put them in the "
                   "repository folder with a card that records them")
    raise invalid_argument(
        f"load parameter{'s' if len(names) > 1 else ''} {shown} "
        f"{'are' if len(names) > 1 else 'is'} not supported: zooserve loads a model only from "
        "its folder in the repository and takes no load parameters"
        + (f" ({'; '.join(why)})" if why else ""))

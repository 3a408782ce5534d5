"""Versions taken out of service, from the step that drops them from the served set until
the requests they had taken on are answered; then each is closed. This is the one owner of a
retiring version: the repository hands it over when it switches the served set, its index
shows it UNLOADING meanwhile, and the DataPlane (which counts requests in flight and keeps a
batcher per version) says how many are left and closes what it kept.

Frontends admit a request in the same step of the event loop as they look its model up, so
once a retired version has none in flight, none can come."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zooserve.serving.loaded_model import LoadedModel

log = logging.getLogger(__name__)

# How often the versions taken out of service are looked at for requests in flight.
CLOSE_CHECK_S = 0.02


class RetiringVersions:
    """Holds versions taken out of service until none of their requests is in flight, then
    closes them: `close(model)` (the DataPlane's batchers go, and with them the last
    references to the session), and the version is forgotten."""

    def __init__(self, check_s: float = CLOSE_CHECK_S) -> None:
        self.check_s = check_s
        # model -> (its requests answered when it retired, since when): for the log line.
        self._versions: dict[LoadedModel, tuple[int, float]] = {}
        # Until the DataPlane says otherwise, nothing counts requests: none is in flight.
        self._in_flight: Callable[[LoadedModel], int] = lambda model: 0
        self._close: Callable[[LoadedModel], None] = lambda model: None
        self._watcher: asyncio.Task | None = None

    def answer_to(
        self, in_flight: Callable[[LoadedModel], int], close: Callable[[LoadedModel], None]
    ) -> None:
        """Who counts a version's requests in flight, and what closing it closes: the
        DataPlane that admits the requests and keeps the batchers."""
        self._in_flight = in_flight
        self._close = close

    def take(self, models: Iterable[LoadedModel]) -> None:
        """Hold these versions from now until their requests are answered. On a running
        event loop a watcher closes them as they become idle; without one (a repository used
        alone), `close_answered` does it when called."""
        for model in models:
            self._versions[model] = (_answered(model), time.monotonic())
        if not self._versions or (self._watcher is not None and not self._watcher.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._watcher = loop.create_task(self._close_when_answered(),
                                         name="close retired model versions")

    def models(self) -> list[LoadedModel]:
        """The versions still answering requests they had taken on."""
        return list(self._versions)

    def __contains__(self, model: object) -> bool:
        return model in self._versions

    def close_answered(self) -> list[LoadedModel]:
        """Close every held version none of whose requests is in flight; returns those."""
        now = time.monotonic()
        closed = []
        for model, (answered, since) in list(self._versions.items()):
            if self._in_flight(model):
                continue
            del self._versions[model]
            self._close(model)
            closed.append(model)
            log.info(
                "released %s version %d: its in-flight calls finished (%d answered in the "
                "%.2f s after it was taken out of service)", model.name, model.version,
                _answered(model) - answered, now - since)
        return closed

    async def _close_when_answered(self) -> None:
        while self._versions:
            self.close_answered()
            if self._versions:
                await asyncio.sleep(self.check_s)

    def stop(self) -> None:
        """Stop watching (the server is closing); what is held stays held."""
        if self._watcher is not None:
            self._watcher.cancel()


def _answered(model: LoadedModel) -> int:
    snapshot = model.statistics.snapshot()
    return snapshot.success.count + snapshot.fail.count

"""One queue per model on each event loop: the dynamic batcher.

Requests that reach a model while it is busy wait in its queue. Whenever the model can run
(at most `instances` runs of it at once), the batcher takes the waiting requests in order,
as many rows as the model's max_batch_size allows (one request for a model that does not
batch), stacks their inputs along the first axis, runs ONNX Runtime once and hands each
request its own rows of the outputs. With a `max_queue_delay_us` it first waits up to that
long for more rows (until the largest preferred batch size is queued); without one it never
waits, so a lone request runs at once and batches form only under load.

Each request keeps what is its own: a deadline that passed while it waited answers it
DEADLINE_EXCEEDED without running it, a client that went away is skipped, and an error that
ONNX Runtime raises for a batch is traced to the request that caused it by running the
batch's requests one by one. The queue is bounded before it: the DataPlane admits a request
only while fewer than the model's `max_queue_size` wait to run (and fewer than the
server's `max_inflight` are in flight) and refuses the next at once with
RESOURCE_EXHAUSTED, so a server under too much load says so rather than holding requests
until their clients give up. A request stops waiting when a run takes it (`submit`'s
`started`).

A run cheap enough (see `zooserve.serving.inline_runs`) is made on the event loop itself; any
other is handed to the inference threads, once per batch."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from zooserve.protocol.errors import (
    ErrorKind,
    ServingError,
    deadline_exceeded,
)
from zooserve.serving.inline_runs import INLINE_BELOW_NS, runs_inline
from zooserve.serving.loaded_model import LoadedModel, PreparedRequest


@dataclass(slots=True)
class BatchResult:
    """What one request gets back from the run it was part of, and where that run's time
    went: waiting, stacking the batch, the run, splitting out its rows."""

    outputs: dict[str, np.ndarray]
    queue_ns: int
    input_ns: int
    infer_ns: int
    output_ns: int


@dataclass(slots=True)
class _Waiting:
    prepared: PreparedRequest
    future: asyncio.Future | None  # None: run at once, outside the queue
    enqueued_ns: int
    deadline: float | None  # time.monotonic() by which the client wants its answer
    started: Callable[[], object] | None = None  # called when a run takes it


class Batcher:
    """The queue of one model on one event loop."""

    def __init__(self, model: LoadedModel, executor: Executor) -> None:
        self.model = model
        self._executor = executor
        self._loop = asyncio.get_running_loop()
        self._waiting: collections.deque[_Waiting] = collections.deque()
        self._rows = 0  # rows waiting
        self._running = 0  # runs in progress
        self._wakeup: asyncio.Future | None = None
        self._filled: asyncio.Future | None = None
        batching = model.config.dynamic_batching
        self._max_rows = model.max_batch_size or 1
        self._delay_s = batching.max_queue_delay_us / 1e6 if model.max_batch_size else 0.0
        self._target_rows = max(model.preferred_batch_sizes or [self._max_rows])
        self._task = self._loop.create_task(self._serve(), name=f"batcher {model.name}")

    def run_now(self, prepared: PreparedRequest) -> BatchResult | None:
        """Run a request at once, on the event loop, when nothing else of this model waits
        or runs, the model does not wait for batches to fill (no max_queue_delay_us), its
        runs are made inline and this one costs less than a hand-off between tasks
        (INLINE_BELOW_NS); None otherwise, and the caller queues it. For such a model a
        batch saves less than the queue costs; a dearer model queues even when alone, so
        that requests arriving in the same turn of the loop join its batch. No request
        passes one that is waiting."""
        if (self._waiting or self._running or self._delay_s
                or not runs_inline(self.model, prepared.rows)
                or not 0 < self.model.estimate_ns(prepared.rows) < INLINE_BELOW_NS):
            return None
        outcome = _run_alone(self.model, _Waiting(prepared, None, time.perf_counter_ns(), None))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def submit(
        self, prepared: PreparedRequest, deadline: float | None,
        started: Callable[[], object] | None = None,
    ) -> asyncio.Future:
        """Queue one checked request; its future gets a BatchResult or a ServingError.
        `started()` is called when a run takes it from the queue (not for one dropped)."""
        future = self._loop.create_future()
        self._waiting.append(
            _Waiting(prepared, future, time.perf_counter_ns(), deadline, started))
        self._rows += prepared.rows
        self._wake()
        if self._filled is not None and self._rows >= self._target_rows:
            _resolve(self._filled)
        return future

    def close(self) -> None:
        """Stop the batcher's task (from any thread). Call it after the DataPlane's drain,
        which waits until every queued request is answered: nothing is waiting then."""
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)

    def _wake(self) -> None:
        if self._wakeup is not None:
            _resolve(self._wakeup)

    async def _serve(self) -> None:
        while True:
            if not self._waiting or self._running >= self.model.config.instances:
                self._wakeup = self._loop.create_future()
                await self._wakeup
                self._wakeup = None
                continue
            if self._delay_s and self._rows < self._target_rows:
                await self._wait_to_fill()
            batch = self._take()
            if not batch:
                continue
            rows = sum(w.prepared.rows for w in batch)
            if runs_inline(self.model, rows):
                self._answer(batch, _run_safely(self.model, batch))
                await asyncio.sleep(0)  # let the requests that arrived meanwhile queue
            else:
                self._running += 1
                self._loop.create_task(self._run_on_thread(batch))

    async def _wait_to_fill(self) -> None:
        """Wait until the target rows are queued or the oldest request has waited the
        model's max_queue_delay_us."""
        oldest = self._waiting[0].enqueued_ns
        remaining = self._delay_s - (time.perf_counter_ns() - oldest) / 1e9
        if remaining <= 0:
            return
        self._filled = self._loop.create_future()
        timer = self._loop.call_later(remaining, _resolve, self._filled)
        try:
            await self._filled
        finally:
            timer.cancel()
            self._filled = None

    def _take(self) -> list[_Waiting]:
        """The next batch, in arrival order: requests whose client is gone are dropped,
        those whose deadline passed are answered DEADLINE_EXCEEDED; it stops at the row
        limit or at a request whose inner shapes differ from the first one's."""
        batch: list[_Waiting] = []
        rows = 0
        now = time.monotonic()
        while self._waiting:
            item = self._waiting[0]
            if item.future.done():  # cancelled: the client went away
                self._pop()
                continue
            if item.deadline is not None and now >= item.deadline:
                self._pop()
                item.future.set_exception(deadline_exceeded(
                    f"model '{self.model.name}': the request's deadline passed after "
                    f"{(time.perf_counter_ns() - item.enqueued_ns) / 1e6:.1f} ms in the "
                    "queue; it was not run"
                ))
                continue
            if batch and (rows + item.prepared.rows > self._max_rows
                          or not batch[0].prepared.fits_with(item.prepared)):
                break
            self._pop()
            batch.append(item)
            rows += item.prepared.rows
            if item.started is not None:
                item.started()
        return batch

    def _pop(self) -> None:
        self._rows -= self._waiting.popleft().prepared.rows

    async def _run_on_thread(self, batch: list[_Waiting]) -> None:
        try:
            outcomes = await self._loop.run_in_executor(
                self._executor, _run_safely, self.model, batch
            )
        except Exception as exc:  # the executor itself failed (shut down)
            outcomes = [exc] * len(batch)
        finally:
            self._running -= 1
            self._wake()
        self._answer(batch, outcomes)

    @staticmethod
    def _answer(batch: list[_Waiting], outcomes: Sequence[BatchResult | Exception]) -> None:
        for item, outcome in zip(batch, outcomes, strict=True):
            if item.future.done():
                continue
            if isinstance(outcome, Exception):
                item.future.set_exception(outcome)
            else:
                item.future.set_result(outcome)


def _resolve(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


def _run_safely(model: LoadedModel, batch: list[_Waiting]) -> list[BatchResult | Exception]:
    try:
        return _run(model, batch)
    except Exception as exc:  # a bug of ours: every request of the batch is told, none lost
        return [exc] * len(batch)


def _run(model: LoadedModel, batch: list[_Waiting]) -> list[BatchResult | Exception]:
    """Run one batch (on whichever thread is given it) and split the outputs back."""
    if len(batch) == 1:
        return [_run_alone(model, batch[0])]
    start = time.perf_counter_ns()
    feeds = {
        name: np.concatenate([w.prepared.feeds[name] for w in batch])
        for name in batch[0].prepared.feeds
    }
    wanted = {name for w in batch for name in w.prepared.output_names}
    names = [name for name in model.output_names(None) if name in wanted]
    stacked = time.perf_counter_ns()
    try:
        results = model.execute(feeds, names)
    except ServingError as error:
        if error.kind is ErrorKind.INVALID_ARGUMENT:
            return [_run_alone(model, item) for item in batch]  # whose input was it?
        return [error] * len(batch)
    ran = time.perf_counter_ns()
    rows = sum(w.prepared.rows for w in batch)
    if any(r.shape[:1] != (rows,) for r in results):
        # Outputs that do not follow the batch's rows cannot be split: one by one instead.
        return [_run_alone(model, item) for item in batch]
    by_name = dict(zip(names, results, strict=True))
    split: list[dict[str, np.ndarray]] = []
    offset = 0
    for item in batch:
        end = offset + item.prepared.rows
        outputs = {name: by_name[name][offset:end] for name in item.prepared.output_names}
        split.append(item.prepared.finish(outputs) if item.prepared.finish else outputs)
        offset = end
    done = time.perf_counter_ns()
    model.statistics.record_execution(rows, stacked - start, ran - stacked, done - ran)
    return [
        BatchResult(outputs, start - item.enqueued_ns, stacked - start, ran - stacked,
                    done - ran)
        for item, outputs in zip(batch, split, strict=True)
    ]


def _run_alone(model: LoadedModel, item: _Waiting) -> BatchResult | ServingError:
    """One request in a run of its own: no stacking, no splitting."""
    prepared = item.prepared
    start = time.perf_counter_ns()
    try:
        results = model.execute(prepared.feeds, prepared.output_names)
    except ServingError as error:
        return error
    ran = time.perf_counter_ns()
    model.statistics.record_execution(prepared.rows, 0, ran - start, 0)
    outputs = dict(zip(prepared.output_names, results, strict=True))
    if prepared.finish:
        outputs = prepared.finish(outputs)
    return BatchResult(outputs, start - item.enqueued_ns, 0, ran - start, 0)

"""The batcher in-process, with a fake model (no ONNX Runtime) that records every run it is
given: requests stack up to the batch limit, a lone request waits the queue delay for
company, a request whose deadline passed in the queue is not run, a cancelled request is
dropped while the rest of its batch runs, and one bad request in a batch fails alone. Each
test runs its own event loop with a real thread pool; waits have deadlines, and the only
pauses are the queue delays the tests configure."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from zooserve.protocol.errors import ErrorKind, ServingError, invalid_argument
from zooserve.repository.layout import MODEL_FILE
from zooserve.serving.batching import Batcher, BatchResult
from zooserve.serving.dataplane import DataPlane, InferenceRequest
from zooserve.serving.loaded_model import PreparedRequest
from zooserve.serving.repository import ModelRepository
from zooserve.serving.serving_config import DynamicBatching, ServingConfig
from zooserve.serving.statistics import ModelStatistics

# How long any answer may take when nothing makes it wait: far beyond a run of the fake.
ANSWER_DEADLINE_S = 10.0


class FakeModel:
    """What the batcher uses of a loaded model. Its one input `x` holds one value per row,
    each row's own id; a run answers `y` = 2 * x and records the ids it ran together. A
    negative id is a row ONNX Runtime would refuse: any run holding one fails with
    INVALID_ARGUMENT; `failure` makes every run fail with that error instead."""

    name = "fake"
    version = 1
    labels = None
    output_datatypes = {"y": "FP32"}
    device = "CPU"
    run_ns = 0  # not timed: the inline-or-thread rule decides from `execution`
    row_ns = 0
    inline_below_ns = 0

    def __init__(self, max_batch_size: int = 8, delay_us: int = 0,
                 preferred: Sequence[int] = (), execution: str = "thread",
                 instances: int = 1, max_queue_size: int = 256) -> None:
        self.config = ServingConfig(
            dynamic_batching=DynamicBatching(max_queue_delay_us=delay_us,
                                             preferred_batch_sizes=tuple(preferred)),
            instances=instances, execution=execution,
        )
        self.max_batch_size = max_batch_size
        self.max_queue_size = max_queue_size
        self.preferred_batch_sizes = list(preferred)
        self.statistics = ModelStatistics()
        self.runs: list[tuple[int, ...]] = []  # the ids of each run, in the order run
        self.threads: set[str] = set()  # where the runs were made
        self.failure: ServingError | None = None
        self._lock = threading.Lock()

    def runs_inline(self, rows: int) -> bool:
        return self.config.execution == "inline"

    def estimate_ns(self, rows: int) -> int:
        return 0

    def prepare(self, inputs: Mapping[str, np.ndarray], requested: Sequence[str] | None,
                parameters: Mapping[str, object]) -> PreparedRequest:
        return PreparedRequest(len(inputs["x"]), dict(inputs), ["y"])

    def output_names(self, requested: Sequence[str] | None) -> list[str]:
        return ["y"]

    def execute(self, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
        ids = tuple(int(v) for v in feeds["x"][:, 0])
        with self._lock:
            self.runs.append(ids)
            self.threads.add(threading.current_thread().name)
        if self.failure is not None:
            raise self.failure
        if any(i < 0 for i in ids):
            raise invalid_argument(f"row {min(ids)} is out of range")
        return [feeds["x"] * 2.0]


def request(*ids: int) -> PreparedRequest:
    """A request of one row per id."""
    return PreparedRequest(len(ids), {"x": np.array([[i] for i in ids], np.float32)}, ["y"])


def answered(result: BatchResult) -> list[int]:
    """The ids a request got back (its own rows of y, halved)."""
    return [int(v) // 2 for v in result.outputs["y"][:, 0]]


def serve(model: FakeModel, scenario) -> None:
    """Run `scenario(batcher)` on a fresh event loop, runs on a real thread pool."""

    async def main() -> None:
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="inference") as pool:
            batcher = Batcher(model, pool)
            try:
                await asyncio.wait_for(scenario(batcher), ANSWER_DEADLINE_S)
            finally:
                batcher.close()

    asyncio.run(main())


@pytest.mark.parametrize("execution", ["thread", "inline"])
def test_requests_queued_together_run_as_one_batch_up_to_the_batch_limit(execution):
    model = FakeModel(max_batch_size=4, execution=execution)

    async def scenario(batcher: Batcher) -> None:
        # Submitted in one turn of the loop: all six wait when the batcher first looks.
        futures = [batcher.submit(request(i), None) for i in range(6)]
        results = await asyncio.gather(*futures)
        assert [answered(r) for r in results] == [[i] for i in range(6)]

    serve(model, scenario)
    assert model.runs == [(0, 1, 2, 3), (4, 5)]
    assert (model.threads == {"MainThread"}) == (execution == "inline")


def test_a_batch_stops_before_a_request_whose_rows_would_pass_the_limit():
    model = FakeModel(max_batch_size=4)

    async def scenario(batcher: Batcher) -> None:
        futures = [batcher.submit(request(*ids), None) for ids in [(0, 1, 2), (3, 4), (5, 6)]]
        results = await asyncio.gather(*futures)
        assert [answered(r) for r in results] == [[0, 1, 2], [3, 4], [5, 6]]

    serve(model, scenario)
    assert model.runs == [(0, 1, 2), (3, 4, 5, 6)]


def test_a_batch_runs_as_soon_as_the_preferred_size_is_queued_without_the_delay():
    delay_s = 60.0  # far beyond the test's deadline: only the preferred size can start it
    model = FakeModel(max_batch_size=8, delay_us=int(delay_s * 1e6), preferred=[4])

    async def scenario(batcher: Batcher) -> None:
        futures = []
        for i in range(4):  # one per turn of the loop: the batcher looks between them
            futures.append(batcher.submit(request(i), None))
            await asyncio.sleep(0)
        results = await asyncio.gather(*futures)
        assert [answered(r) for r in results] == [[0], [1], [2], [3]]

    serve(model, scenario)
    assert model.runs == [(0, 1, 2, 3)]


def test_a_lone_request_waits_the_queue_delay_then_runs_with_those_that_came_meanwhile():
    delay_s = 0.2
    model = FakeModel(max_batch_size=8, delay_us=int(delay_s * 1e6))
    waited: list[float] = []

    async def scenario(batcher: Batcher) -> None:
        start = time.perf_counter()
        first = batcher.submit(request(0), None)
        await asyncio.sleep(0)  # the batcher starts waiting for company
        assert not first.done() and model.runs == []
        second = batcher.submit(request(1), None)
        results = await asyncio.gather(first, second)
        waited.append(time.perf_counter() - start)
        assert [answered(r) for r in results] == [[0], [1]]
        alone = await batcher.submit(request(2), None)  # nobody comes: it runs after the delay
        assert answered(alone) == [2]
        assert alone.queue_ns >= delay_s * 1e9 * 0.95

    serve(model, scenario)
    assert model.runs == [(0, 1), (2,)]
    assert waited[0] >= delay_s * 0.95  # the timer's own resolution, no more


def test_a_request_whose_deadline_passed_in_the_queue_is_not_run():
    delay_s = 0.2
    model = FakeModel(max_batch_size=8, delay_us=int(delay_s * 1e6))
    started: list[int] = []

    async def scenario(batcher: Batcher) -> None:
        # Its deadline passes while the batcher waits for company; the other has none.
        late = batcher.submit(request(0), time.monotonic() + delay_s / 4,
                              lambda: started.append(0))
        on_time = batcher.submit(request(1), None, lambda: started.append(1))
        result = await on_time
        assert answered(result) == [1]
        with pytest.raises(ServingError) as caught:
            await late
        assert caught.value.kind is ErrorKind.DEADLINE_EXCEEDED
        assert "it was not run" in caught.value.message

    serve(model, scenario)
    assert model.runs == [(1,)]
    assert started == [1]  # a run took only the one it ran


def test_a_cancelled_request_is_dropped_and_the_rest_of_its_batch_runs():
    delay_s = 0.2
    model = FakeModel(max_batch_size=8, delay_us=int(delay_s * 1e6))
    started: list[int] = []

    async def scenario(batcher: Batcher) -> None:
        futures = [batcher.submit(request(i), None, lambda i=i: started.append(i))
                   for i in range(3)]
        futures[1].cancel()  # its client went away while it waited
        results = await asyncio.gather(futures[0], futures[2])
        assert [answered(r) for r in results] == [[0], [2]]
        assert futures[1].cancelled()

    serve(model, scenario)
    assert model.runs == [(0, 2)]
    assert started == [0, 2]


def test_a_bad_request_in_a_batch_fails_alone_and_the_others_get_their_answers():
    model = FakeModel(max_batch_size=8)

    async def scenario(batcher: Batcher) -> None:
        futures = [batcher.submit(request(i), None) for i in (0, -1, 2)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert answered(results[0]) == [0] and answered(results[2]) == [2]
        assert isinstance(results[1], ServingError)
        assert results[1].kind is ErrorKind.INVALID_ARGUMENT
        assert "row -1" in results[1].message

    serve(model, scenario)
    # The batch failed; its requests were run one by one to find whose input it was.
    assert model.runs == [(0, -1, 2), (0,), (-1,), (2,)]


def test_an_error_not_of_the_input_fails_the_whole_batch_without_runs_one_by_one():
    model = FakeModel(max_batch_size=8)
    model.failure = ServingError(ErrorKind.INTERNAL, "the session is broken")

    async def scenario(batcher: Batcher) -> None:
        futures = [batcher.submit(request(i), None) for i in range(3)]
        results = await asyncio.gather(*futures, return_exceptions=True)
        assert all(r is model.failure for r in results), results

    serve(model, scenario)
    assert model.runs == [(0, 1, 2)]


def test_requests_that_queue_while_the_model_runs_go_into_its_next_run_together():
    model = FakeModel(max_batch_size=8)
    release = threading.Event()
    running = threading.Event()
    execute = model.execute

    def held_execute(feeds, names):
        if not release.is_set():  # the first run holds the model until released
            running.set()
            assert release.wait(ANSWER_DEADLINE_S)
        return execute(feeds, names)

    model.execute = held_execute

    async def scenario(batcher: Batcher) -> None:
        first = batcher.submit(request(0), None)
        assert await asyncio.to_thread(running.wait, ANSWER_DEADLINE_S)
        later = [batcher.submit(request(i), None) for i in (1, 2, 3)]
        await asyncio.sleep(0)
        assert not any(f.done() for f in later)  # one instance: they wait for the run
        release.set()
        results = await asyncio.gather(first, *later)
        assert [answered(r) for r in results] == [[0], [1], [2], [3]]

    serve(model, scenario)
    assert model.runs == [(0,), (1, 2, 3)]


def test_max_queue_size_counts_the_requests_waiting_to_run_not_those_running(tmp_path):
    """The DataPlane's admission over the batcher: with max_queue_size 1, one request may
    run and one wait; the third is refused at once. Every request taken on is in flight."""
    model = FakeModel(max_batch_size=8, max_queue_size=1)
    release = threading.Event()
    running = threading.Event()
    execute = model.execute

    def held_execute(feeds, names):
        running.set()
        assert release.wait(ANSWER_DEADLINE_S)
        return execute(feeds, names)

    model.execute = held_execute
    # An empty repository folder: the model is handed to the DataPlane's verbs directly.
    repository = ModelRepository(tmp_path, {MODEL_FILE: lambda *args, **kwargs: model})
    dataplane = DataPlane(repository, inference_threads=2)

    def infer(i: int):
        return dataplane.infer(InferenceRequest(model, {"x": np.array([[i]], np.float32)}))

    async def scenario() -> None:
        first = asyncio.ensure_future(infer(0))
        assert await asyncio.to_thread(running.wait, ANSWER_DEADLINE_S)
        assert (dataplane.in_flight(model), dataplane.waiting(model)) == (1, 0)
        second = asyncio.ensure_future(infer(1))
        await asyncio.sleep(0)  # taken on and queued behind the run: it waits
        assert (dataplane.in_flight(model), dataplane.waiting(model)) == (2, 1)
        with pytest.raises(ServingError) as refused:
            await infer(2)
        assert refused.value.kind is ErrorKind.RESOURCE_EXHAUSTED
        assert "1 requests waiting to run" in refused.value.message
        assert "max_queue_size" in refused.value.message
        release.set()
        answers = await asyncio.gather(first, second)
        assert [answer.outputs["y"][0, 0] for answer in answers] == [0.0, 2.0]
        assert (dataplane.in_flight(model), dataplane.waiting(model)) == (0, 0)
        assert dataplane.in_flight() == 0

    try:
        asyncio.run(asyncio.wait_for(scenario(), ANSWER_DEADLINE_S))
    finally:
        release.set()
        dataplane.close()
    assert model.runs == [(0,), (1,)]

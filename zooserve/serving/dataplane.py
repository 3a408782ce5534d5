"""The verbs every frontend offers: live, ready, metadata, infer, statistics, index.

The DataPlane owns the model repository and the threads inference runs on, and it admits
requests: it counts each model's requests in flight and waiting (`in_flight`, `waiting`),
which the metrics and the retiring of old versions read. It speaks numpy and plain data
classes; frontends translate their protocol to these calls and back."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from zooserve.protocol.errors import ServingError, resource_exhausted, unavailable
from zooserve.serving import __version__
from zooserve.serving.batching import Batcher, BatchResult
from zooserve.serving.cpus import CpuLimit, auto_intra_op_threads, detect_cpu_limit
from zooserve.serving.inline_runs import inline_limit
from zooserve.serving.load_options import LoadOptions, signature_keys
from zooserve.serving.loaded_model import LoadedModel
from zooserve.serving.model_control import ModelControl
from zooserve.serving.model_kinds import ModelKinds
from zooserve.serving.repository import IndexEntry, ModelRepository
from zooserve.serving.settings import Settings
from zooserve.serving.statistics import StatisticsSnapshot

T = TypeVar("T")

# A request message at least this large is decoded on an inference thread, not on the event
# loop, so one big request does not hold up every other call (health checks included); so is
# an answer whose outputs are at least this large encoded.
DECODE_OFF_LOOP_BYTES = 256 * 1024

SERVER_NAME = "zooserve"

log = logging.getLogger(__name__)


@dataclass
class InferenceRequest:
    # Frontends look the model up (`DataPlane.model`) before decoding, because decoding
    # checks each input against its signature; the request carries what they found.
    model: LoadedModel
    inputs: Mapping[str, np.ndarray]
    requested_outputs: Sequence[str] | None = None
    id: str = ""
    # When the frontend began to decode it (time.perf_counter_ns): decoding counts as the
    # request's compute_input, as Triton counts it.
    received_ns: int = field(default_factory=time.perf_counter_ns)
    # time.monotonic() by which the client wants its answer; None: no deadline.
    deadline: float | None = None
    # The request's parameters (name -> bool, int, float or str), as the client sent them.
    parameters: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class DrainReport:
    """Inference requests over the server's life: taken on, answered, refused while draining."""

    accepted: int
    answered: int
    refused: int

    def describe(self) -> str:
        return (f"{self.accepted} inference requests accepted, {self.answered} answered, "
                f"{self.refused} refused while draining")


@dataclass
class _ModelCounts:
    """One model's inference requests taken on and not yet answered (`in_flight`), and of
    those the ones no run has taken yet (`waiting`: being read, decoded or queued)."""

    in_flight: int = 0
    waiting: int = 0


@dataclass(eq=False)
class Admission:
    """One inference request taken on for `model`, until it is answered
    (`DataPlane.admission`). It waits until a run of the model takes it (`start`): only
    waiting requests count against the model's max_queue_size, as only queued requests
    count against Triton's."""

    model: LoadedModel
    counts: _ModelCounts  # its model's, in the DataPlane
    waiting: bool = True

    def start(self) -> None:
        """A run took the request (the batcher calls it, once): it no longer waits."""
        if self.waiting:
            self.waiting = False
            self.counts.waiting -= 1


@dataclass
class InferenceResponse:
    model_name: str
    model_version: int
    outputs: dict[str, np.ndarray]
    datatypes: dict[str, str]  # output name -> protocol datatype, from the signature
    id: str = ""
    labels: list[str] | None = field(default=None, repr=False)


class DataPlane:
    def __init__(
        self, repository: ModelRepository, inference_threads: int = 4, max_inflight: int = 1024,
        model_control: str = "none", poll_interval: float = 5.0,
    ) -> None:
        self._repository = repository
        self.max_inflight = max_inflight
        # Draining has begun: readiness is false from here on, though requests are still
        # taken until `_closing` (the drain delay lets load balancers notice first).
        self._unready = False
        self._executor = ThreadPoolExecutor(
            max_workers=inference_threads, thread_name_prefix="inference"
        )
        self._closing = False
        self._large_work = threading.Lock()  # see _off_loop_if_large
        self._listeners: list[Callable[[], object]] = []
        self._batchers: dict[tuple[asyncio.AbstractEventLoop, LoadedModel], Batcher] = {}
        # The DataPlane admits requests, so it counts them per model (only models with a
        # request in flight have an entry: a retired version leaves none behind).
        self._counts: dict[LoadedModel, _ModelCounts] = {}
        # Inference requests taken on, answered (with outputs or an error) and refused while
        # draining: `drain` waits until every request taken on is answered.
        self._accepted = 0
        self._answered = 0
        self._refused = 0
        # Loading, reloading and unloading while serving.
        self._control = ModelControl(
            repository, model_control, poll_interval, changed=self.notify_changed,
            release=self.release_model, serving=lambda: not (self._unready or self._closing),
            in_flight=self.in_flight,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, kinds: ModelKinds, cpu_limit: CpuLimit | None = None
    ) -> DataPlane:
        """Load the repository the settings name, each version by its kind in `kinds` (the
        table the server was put together with, `server.model_kinds`), all with one set of
        load options made here. Raises onnx_sessions.DeviceUnavailable when `cuda` was asked
        for and cannot be had."""
        cpu_limit = cpu_limit or detect_cpu_limit()
        options = LoadOptions(
            device=settings.device, max_batch_size=settings.max_batch_size,
            intra_op_threads=ort_threads(settings, cpu_limit), cache_dir=settings.cache_dir,
            inline_below_ns=inline_limit(max(1, cpu_limit.cores // settings.workers)),
            max_queue_size=settings.max_queue_size,
            verify_keys=signature_keys(settings.verify_key),
        )
        repository = ModelRepository(settings.models, kinds, options,
                                     require_all=settings.require_all_models)
        repository.load()
        return cls(repository, settings.inference_threads, settings.max_inflight,
                   settings.model_control, settings.poll_interval)

    # health
    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        return not (self._unready or self._closing) and self._repository.ready

    def model_ready(self, name: str, version: str | None = None) -> bool:
        if self._unready or self._closing:
            return False
        try:
            self._repository.get(name, version)
        except ServingError:
            return False
        return True

    # metadata
    @property
    def server_name(self) -> str:
        return SERVER_NAME

    @property
    def server_version(self) -> str:
        return __version__

    def model(self, name: str, version: str | None = None) -> LoadedModel:
        return self._repository.get(name, version)

    def names(self) -> list[str]:
        """The names of the models that loaded."""
        return self._repository.names()

    def failed_names(self) -> list[str]:
        """The names of models found of which no version loaded."""
        return self._repository.failed_names()

    def add_listener(self, changed: Callable[[], object]) -> None:
        """Call `changed()` (a function or a coroutine function) whenever the set of served
        models or the server's readiness changes: frontends refresh their health with it."""
        self._listeners.append(changed)

    async def notify_changed(self) -> None:
        for changed in list(self._listeners):
            result = changed()
            if asyncio.iscoroutine(result):
                await result

    # changing the served models while serving (zooserve/serving/model_control.py)
    @property
    def model_control(self) -> str:
        """none, explicit or poll, as Triton's --model-control-mode."""
        return self._control.mode

    def start_model_control(self) -> None:
        """Start polling the repository (poll mode); on the event loop, once serving."""
        self._control.start()

    async def load_model(self, name: str, parameters: Mapping[str, object] | None = None) -> None:
        """Load or reload `name` from its folder; `parameters` as the request sent them
        (every one is refused: see ModelControl.load)."""
        await self._control.load(name, parameters)

    async def unload_model(self, name: str) -> None:
        await self._control.unload(name)

    async def rescan(self, why: str = "SIGHUP") -> None:
        await self._control.rescan(why)

    def rescan_soon(self, why: str = "SIGHUP") -> None:
        """`rescan` from a signal handler."""
        self._control.rescan_soon(why)

    def release_model(self, model: LoadedModel) -> None:
        """Close the batchers of a version taken out of service, once none of its requests
        is in flight: with them go the last references to its session."""
        for key in [k for k in self._batchers if k[1] is model]:
            self._batchers.pop(key).close()

    def versions(self, name: str) -> list[int]:
        """The loaded versions of a model, lowest first."""
        return self._repository.versions(name)

    def models(self) -> list[LoadedModel]:
        return self._repository.models()

    def index(self) -> list[IndexEntry]:
        return self._repository.index()

    def statistics(
        self, name: str = "", version: str = ""
    ) -> list[tuple[LoadedModel, StatisticsSnapshot]]:
        if name:
            if version:
                models = [self._repository.get(name, version)]
            else:
                self._repository.get(name)  # NOT_FOUND for an unknown name
                models = [self._repository.get(name, v) for v in self.versions(name)]
        else:
            models = self.models()
        return [(m, m.statistics.snapshot()) for m in models]

    # inference
    def in_flight(self, model: LoadedModel | None = None) -> int:
        """Inference requests taken on and not yet answered: for `model`, or (None) every
        model together."""
        if model is None:
            return self._accepted - self._answered
        counts = self._counts.get(model)
        return counts.in_flight if counts else 0

    def waiting(self, model: LoadedModel) -> int:
        """`model`'s requests taken on that no run has taken yet (read, decoded, queued):
        what its max_queue_size limits."""
        counts = self._counts.get(model)
        return counts.waiting if counts else 0

    async def off_loop_if_large(self, work: Callable[[bytes], T], data: bytes) -> T:
        """`work(data)` for a message: off the event loop when it is large (see
        `_off_loop_if_large`)."""
        return await self._off_loop_if_large(len(data), work, data)

    async def _off_loop_if_large(self, size: int, work: Callable[..., T], *args) -> T:
        """`work(*args)`, which decodes or encodes `size` bytes: on the event loop when small;
        from DECODE_OFF_LOOP_BYTES on, on an inference thread, one such piece at a time. Such
        work holds the GIL in long C calls (protobuf parsing, copies), and two at once would
        keep the event loop from it for their sum; one at a time it waits for one call at
        most."""
        if size < DECODE_OFF_LOOP_BYTES:
            return work(*args)

        def alone() -> T:
            with self._large_work:
                return work(*args)

        return await asyncio.get_running_loop().run_in_executor(self._executor, alone)

    def _admit(self, model: LoadedModel) -> Admission:
        """Take one request on for `model`, or refuse it at once: UNAVAILABLE while the
        server drains, RESOURCE_EXHAUSTED beyond the server's limit of requests in flight or
        the model's limit of requests waiting (the message says which)."""
        if self._closing:
            self._refused += 1
            raise unavailable("the server is shutting down; send the request again (to "
                              "another replica)")
        if self.in_flight() >= self.max_inflight:
            model.statistics.record_failure(0)  # counted as Triton counts a rejected request
            raise resource_exhausted(
                f"the server has {self.in_flight()} inference requests in flight, its limit "
                "(--max-inflight / ZOOSERVE_MAX_INFLIGHT): retry later or at another replica"
            )
        counts = self._counts.get(model) or _ModelCounts()
        if counts.waiting >= model.max_queue_size:
            model.statistics.record_failure(0)
            raise resource_exhausted(
                f"model '{model.name}' has {counts.waiting} requests waiting to run, its "
                "limit (max_queue_size in its serving.json, else --max-queue-size): retry "
                "later or at another replica"
            )
        self._counts[model] = counts
        self._accepted += 1
        counts.in_flight += 1
        counts.waiting += 1
        return Admission(model, counts)

    async def infer(
        self, request: InferenceRequest, encode: Callable[[InferenceResponse], T] | None = None
    ) -> T | InferenceResponse:
        """Run one request through its model's queue and answer it, encoded by the
        frontend's `encode` when given: the encoding is timed as the request's
        compute_output, so the statistics cover the request's whole time in the server."""
        return await self.infer_message(request.model, lambda: request, 0, encode)

    async def infer_message(
        self,
        model: LoadedModel,
        decode: Callable[[], InferenceRequest],
        size: int,
        encode: Callable[[InferenceResponse], T] | None = None,
    ) -> T | InferenceResponse:
        """`infer` for a request still in its protocol's form: admitted first (so a refused
        request costs no decoding), then decoded by `decode()` (a message of `size` bytes
        or more on an inference thread, off the event loop), then run."""
        with self.admission(model) as admitted:
            return await self.infer_admitted(admitted, decode, size, encode)

    @contextlib.contextmanager
    def admission(self, model: LoadedModel) -> Iterator[Admission]:
        """Take one request on for `model` (or refuse it at once, see `_admit`) for the
        block, which answers it: a frontend that must still read the request (an HTTP body)
        reads it inside, so a refused request costs no reading either."""
        admitted = self._admit(model)
        try:
            yield admitted
        finally:
            self._answered += 1
            admitted.start()  # answered without a run: it waits no more either
            admitted.counts.in_flight -= 1
            if not admitted.counts.in_flight:
                del self._counts[model]

    async def infer_admitted(
        self,
        admitted: Admission,
        decode: Callable[[], InferenceRequest],
        size: int,
        encode: Callable[[InferenceResponse], T] | None = None,
    ) -> T | InferenceResponse:
        """`infer_message` inside an `admission` the caller holds."""
        model = admitted.model
        # A decoding error is the client's mistake, answered as if never admitted.
        request = await self._off_loop_if_large(size, decode)
        try:
            prepared = model.prepare(request.inputs, request.requested_outputs,
                                     request.parameters)
            queued = time.perf_counter_ns()
            batcher = self._batcher(model)
            result: BatchResult | None = batcher.run_now(prepared)
            if result is None:
                result = await batcher.submit(prepared, request.deadline, admitted.start)
            else:
                admitted.start()  # it ran at once, on the event loop
            answered = time.perf_counter_ns()
            datatypes = {name: model.output_datatypes[name] for name in result.outputs}
            response = InferenceResponse(
                model.name, model.version, result.outputs, datatypes, id=request.id,
                labels=model.labels,
            )
            if encode is None:
                encoded = response
            else:
                size = sum(a.nbytes for a in result.outputs.values())
                encoded = await self._off_loop_if_large(size, encode, response)
        except ServingError:
            model.statistics.record_failure(time.perf_counter_ns() - request.received_ns)
            raise
        model.statistics.record_success(
            result.queue_ns,
            queued - request.received_ns + result.input_ns,
            result.infer_ns,
            result.output_ns + time.perf_counter_ns() - answered,
        )
        return encoded

    def _batcher(self, model: LoadedModel) -> Batcher:
        key = (asyncio.get_running_loop(), model)
        batcher = self._batchers.get(key)
        if batcher is None:
            batcher = self._batchers[key] = Batcher(model, self._executor)
        return batcher

    def stop_ready(self) -> None:
        """The drain's first step: readiness turns false, requests are still taken."""
        self._unready = True

    async def drain(self, timeout: float) -> DrainReport:
        """Refuse new inference requests (UNAVAILABLE; readiness turns false) and wait up to
        `timeout` seconds for those already taken on to be answered."""
        self._unready = self._closing = True
        deadline = time.monotonic() + timeout
        while self._answered < self._accepted and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return DrainReport(self._accepted, self._answered, self._refused)

    def close(self) -> None:
        """Stop taking requests (readiness turns false) and let running ones finish."""
        self._closing = True
        for batcher in self._batchers.values():
            batcher.close()
        self._executor.shutdown(wait=True)


def ort_threads(settings: Settings, cpu_limit: CpuLimit) -> int:
    """ONNX Runtime intra-op threads per session: `ort_threads`, or when it is 0 the rule of
    `cpus.auto_intra_op_threads`. Logged once, with the CPU limit it was chosen from."""
    if settings.ort_threads:
        threads, how = settings.ort_threads, "set by --ort-threads / ZOOSERVE_ORT_THREADS"
    else:
        # Each worker process runs its own sessions: the workers share the CPU limit.
        cores = max(1, cpu_limit.cores // settings.workers)
        threads = auto_intra_op_threads(cores, settings.inference_threads)
        how = (
            f"auto: {cpu_limit.cores} cores shared by {settings.inference_threads} "
            "inference threads"
        )
        if settings.workers > 1:
            how += f" in each of {settings.workers} workers"
    log.info(
        "ONNX Runtime: %d intra-op thread%s per session (%s); CPU limit %s",
        threads,
        "" if threads == 1 else "s",
        how,
        cpu_limit.describe(),
    )
    busy = threads * settings.inference_threads * settings.workers
    if settings.ort_threads and busy > max(cpu_limit.cores, settings.inference_threads):
        log.warning(
            "--ort-threads / ZOOSERVE_ORT_THREADS %d x %d inference threads x %d workers = %d "
            "busy threads on %d cores: requests will contend for the CPU",
            threads, settings.inference_threads, settings.workers, busy, cpu_limit.cores,
        )
    return threads

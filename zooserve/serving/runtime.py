"""One loaded model: an ONNX Runtime session, the signature read from it, its card, the
execution providers really in use, and its statistics. Requests are checked against the
signature here, before they reach ONNX Runtime."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zooserve.protocol.codecs import object_array
from zooserve.protocol.datatypes import DATATYPE_BY_ONNX, NUMPY_BY_DATATYPE
from zooserve.protocol.errors import ErrorKind, ServingError, invalid_argument, quoted
from zooserve.repository import layout
from zooserve.serving.onnx_files import external_data_locations
from zooserve.serving.serving_config import (
    DEFAULT_MAX_QUEUE_SIZE,
    ServingConfig,
    read_serving_config,
)
from zooserve.serving.statistics import ModelStatistics

if TYPE_CHECKING:  # onnxruntime is imported where a session is made, not to read this module
    import onnxruntime as ort

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
# What runs every model, in the words Triton and KServe use for an ONNX Runtime model.
PLATFORM = "onnxruntime_onnx"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str  # protocol name, e.g. FP32
    shape: tuple[int, ...]  # -1 for a dimension of any size

    def describe(self) -> str:
        return f"{self.datatype} {list(self.shape)}"

    @property
    def dtype(self) -> np.dtype:
        return NUMPY_BY_DATATYPE[self.datatype]


def _spec(node: ort.NodeArg) -> TensorSpec:
    # Symbolic dimensions ("batch", "unk__12") and unknown ones become -1.
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in node.shape)
    datatype = DATATYPE_BY_ONNX.get(node.type)
    if datatype is None:
        raise ValueError(f"tensor '{node.name}' has type {node.type}, which zooserve cannot serve")
    return TensorSpec(node.name, datatype, shape)


SessionFactory = Callable[[str, list[str], int], "ort.InferenceSession"]

# The words an operator reads in a one-line startup error about the device.
CUDA_SETTING = "--device cuda (ZOOSERVE_DEVICE=cuda)"
TENSORRT_SETTING = "--device tensorrt (ZOOSERVE_DEVICE=tensorrt)"


class DeviceUnavailable(RuntimeError):
    """The settings insist on a device (`cuda`) that this machine cannot give. Unlike a
    broken model file, this stops the server from starting: serving on the CPU instead
    would be slower than the operator planned for, and nobody would notice."""


def _create_session(
    path: str, providers: list[str], intra_op_threads: int = 0, cache_dir: Path | None = None
):
    """An ONNX Runtime session with zooserve's thread and graph settings.

    `intra_op_threads` counts the calling thread (1: no pool at all; 0: ONNX Runtime's
    default, as wide as the host). Inter-op threads serve only the parallel execution
    mode, which zooserve does not use: pinned to 1 so no second pool is made. Where a pool
    exists its threads do not spin while they wait for work: zooserve runs several sessions
    side by side on its inference threads, and a spinning pool takes cores (and a
    container's CPU quota) from the requests running on them; this holds for CUDA sessions
    too, whose pool only serves the few nodes left on the CPU.

    Every graph optimisation is on (ORT_ENABLE_ALL, ONNX Runtime's default, set here so it
    is a decision). With `cache_dir`, the optimised graph is kept there and later sessions
    load it with optimisation off: see `optimized_model_cache`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if intra_op_threads > 0:
        options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    if intra_op_threads != 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    cached, fresh = optimized_model_cache(cache_dir, Path(path), providers)
    if cached is not None:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            return ort.InferenceSession(str(cached), sess_options=options, providers=providers)
        except Exception as exc:  # a damaged cache entry costs one optimisation, no more
            log.warning("ignoring the cached optimised model %s: %s", cached, _one_line(exc))
            cached.unlink(missing_ok=True)
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if fresh is not None:
        # Written beside the cache and renamed into place once whole, so a session never
        # loads half a file; warnings only, as ONNX Runtime warns that the optimised graph
        # suits this machine, which the cache key already says.
        options.optimized_model_filepath = str(fresh.with_suffix(f".{os.getpid()}.tmp"))
        options.log_severity_level = 3
    session = ort.InferenceSession(path, sess_options=options, providers=providers)
    if fresh is not None:
        written = Path(options.optimized_model_filepath)
        try:
            written.replace(fresh)
        except OSError as exc:
            log.warning("could not cache the optimised model at %s: %s", fresh, exc)
            written.unlink(missing_ok=True)
    return session


def optimized_model_cache(
    cache_dir: Path | None, model: Path, providers: Sequence[str]
) -> tuple[Path | None, Path | None]:
    """(the cached optimised model to load, or None; where to write one, or None).

    ONNX Runtime's fully optimised graph may use this CPU's instruction set and the chosen
    providers' fused kernels, so the key holds the model's bytes (with those of its external
    data, which the optimised graph holds inline), the onnxruntime version,
    the providers and the CPU's feature flags: a copied cache or a changed model is never
    reused. TensorRT builds its own engines and is not cached here. An unusable cache
    folder means no cache, with one warning."""
    if cache_dir is None or any("Tensorrt" in p for p in providers):
        return None, None
    import onnxruntime as ort

    key = hashlib.sha256()
    try:
        weights = [f"{name}={layout.sha256_of_file(model.parent / name)}"
                   for name in external_data_locations(model)]
    except (OSError, ValueError):  # not ONNX, or its data missing: ONNX Runtime says which
        return None, None
    for part in (layout.sha256_of_file(model), *weights, ort.__version__, ",".join(providers),
                 _cpu_flags()):
        key.update(part.encode() + b"\0")
    entry = cache_dir / f"{key.hexdigest()[:32]}.onnx"
    if entry.is_file():
        return entry, None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning("no optimised-model cache: cannot create %s: %s", cache_dir, exc)
        return None, None
    if not os.access(cache_dir, os.W_OK):
        log.warning("no optimised-model cache: %s is not writable", cache_dir)
        return None, None
    return None, entry


@functools.cache
def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


@functools.cache
def prepare_cuda() -> str:
    """Load the CUDA and cuDNN libraries that onnxruntime-gpu's pip wheels (`nvidia-*`)
    install, once, before the first CUDA session: ONNX Runtime's CUDA provider library
    carries no search path to them, so without this it cannot find them and the provider
    is dropped. Builds without `preload_dlls` (older than 1.21) are left alone. Returns
    what went wrong, or "" (the caller decides whether that is fatal)."""
    import onnxruntime as ort

    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        log.info("onnxruntime %s has no preload_dlls; relying on the library path", ort.__version__)
        return ""
    try:
        preload()
    except Exception as exc:  # a missing wheel must not stop a CPU fallback under `auto`
        problem = f"onnxruntime.preload_dlls() failed: {_one_line(exc)}"
        log.warning("%s", problem)
        return problem
    log.info("onnxruntime.preload_dlls() done: CUDA and cuDNN from the nvidia wheels, if any")
    return ""


def open_session(
    path: Path,
    device: str,
    available: Sequence[str] | None = None,
    create: SessionFactory | None = None,
    intra_op_threads: int = 0,
    prepare: Callable[[], str] | None = None,
) -> ort.InferenceSession:
    """Create a session on the device the settings ask for.

    `auto` tries CUDA when this onnxruntime build has it and falls back to the CPU when the
    CUDA provider cannot really be created (no GPU, no driver): ONNX Runtime then silently
    drops it, so the providers are read back from the session, never from
    `get_available_providers()`, which lists what the build has, not what works. `cuda`
    insists on CUDA: without it, DeviceUnavailable with a one-line reason. `prepare` runs
    before the first CUDA session (`prepare_cuda`; tests pass their own).
    """
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    available = list(available)
    create = create or _create_session
    if device == "tensorrt":
        return _open_tensorrt_session(path, available, create, intra_op_threads, prepare)
    if device == "cpu" or (device == "auto" and CUDA not in available):
        return create(str(path), [CPU], intra_op_threads)
    if device == "cuda" and CUDA not in available:
        raise DeviceUnavailable(
            f"{CUDA_SETTING}: this onnxruntime build has no CUDA provider (it has "
            f"{', '.join(available)}); install the `gpu` extra (onnxruntime-gpu) instead of "
            "`serve`, or use --device auto"
        )
    preload_problem = (prepare or prepare_cuda)()
    try:
        session = create(str(path), [CUDA, CPU], intra_op_threads)
    except Exception as exc:
        # Either CUDA failed loudly or the file is broken: the CPU tells which.
        cpu_session = create(str(path), [CPU], intra_op_threads)  # raises for a broken file
        if device == "cuda":
            raise DeviceUnavailable(
                f"{CUDA_SETTING}: the CUDA provider failed for {path}: {_one_line(exc)}"
            ) from None
        log.warning("CUDA provider failed for %s (%s); using the CPU", path, _one_line(exc))
        return cpu_session
    if CUDA not in session.get_providers():
        if device == "cuda":
            why = preload_problem or "ONNX Runtime's own error above says why"
            raise DeviceUnavailable(
                f"{CUDA_SETTING}: ONNX Runtime could not create the CUDA provider for {path} "
                f"(no GPU visible, driver too old, or CUDA/cuDNN libraries missing; {why})"
            )
        log.warning("CUDA provider unavailable at run time for %s; using the CPU", path)
    return session


def _open_tensorrt_session(
    path: Path,
    available: list[str],
    create: SessionFactory,
    intra_op_threads: int,
    prepare: Callable[[], str] | None,
) -> ort.InferenceSession:
    """`tensorrt` insists on TensorRT, with CUDA and then the CPU for the nodes TensorRT
    does not take (ONNX Runtime assigns each node to the first provider that can run it).
    TensorRT builds an engine per input shape on first use, so the warm-up's shapes start
    fast and others pay once; its engines are not in zooserve's optimised-model cache."""
    if TENSORRT not in available:
        raise DeviceUnavailable(
            f"{TENSORRT_SETTING}: this onnxruntime build has no TensorRT provider (it has "
            f"{', '.join(available)}); TensorRT needs onnxruntime-gpu with the TensorRT "
            "libraries installed"
        )
    preload_problem = (prepare or prepare_cuda)()
    try:
        session = create(str(path), [TENSORRT, CUDA, CPU], intra_op_threads)
    except Exception as exc:
        raise DeviceUnavailable(
            f"{TENSORRT_SETTING}: the TensorRT provider failed for {path}: {_one_line(exc)}"
        ) from None
    if TENSORRT not in session.get_providers():
        why = preload_problem or "ONNX Runtime's own error above says why"
        raise DeviceUnavailable(
            f"{TENSORRT_SETTING}: ONNX Runtime could not create the TensorRT provider for "
            f"{path} (TensorRT libraries missing or no GPU; {why})"
        )
    return session


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:300] + "..."


def device_of(providers: Sequence[str]) -> str:
    """GPU when the CUDA or TensorRT provider is in use, else CPU (Triton's instance kinds)."""
    return "GPU" if CUDA in providers or TENSORRT in providers else "CPU"


@dataclass(frozen=True, slots=True)
class PreparedRequest:
    """One request checked against the signature, as ONNX Runtime takes it: its rows (the
    batch size; 1 for a model that does not batch), its feeds and the outputs it wants."""

    rows: int
    feeds: dict[str, np.ndarray]
    output_names: list[str]
    # Applied to this request's own rows of the outputs once the batch is split (a search
    # trims the batch's widest top-k to the k this request asked for); None: as they are.
    finish: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]] | None = None

    def fits_with(self, other: PreparedRequest) -> bool:
        """Whether the two can run in one batch: every input's shape agrees past the
        first axis (a model with free inner axes may get differently shaped requests)."""
        return all(
            other.feeds[name].shape[1:] == array.shape[1:] for name, array in self.feeds.items()
        )


# A run cheaper than this is made on the event loop that received the request: handing it
# to a thread and back costs the loop more than the run itself (issue 8's profile: the
# hand-off was 19% of the server's time on the tiny model, ONNX Runtime 1%).
INLINE_BELOW_NS = 150_000
# Below 4 cores there is no core to spare for a run beside the event loop and gRPC's own
# threads, so a hand-off buys no overlap, only its cost and a second thread contending for
# the GIL: runs are made inline up to this budget, which bounds how long the loop (health
# checks included) is held (docs/serving.md says how to compare the two on a machine).
INLINE_BUDGET_FEW_CORES_NS = 20_000_000


# Runs of more rows than this hand the memory they grew ONNX Runtime's arena by back afterwards
# (LoadedModel.execute); measured in `benchmarks/memory.py`.
ARENA_KEEP_ROWS = 64


def inline_limit(cores: int) -> int:
    """The estimated run time below which a run stays on the event loop, for a process with
    this CPU limit (see `LoadedModel.runs_inline`)."""
    return INLINE_BUDGET_FEW_CORES_NS if cores < 4 else INLINE_BELOW_NS
WARM_UP_RUNS = 5


class LoadedModel:
    # What runs the model, in the words of Triton's model configuration.
    platform = PLATFORM
    backend = "onnxruntime"

    def __init__(
        self,
        name: str,
        version: int,
        path: Path,
        session: ort.InferenceSession,
        card: Mapping,
        max_batch_size: int,
        config: ServingConfig | None = None,
        signature: tuple[list[TensorSpec], list[TensorSpec]] | None = None,
    ) -> None:
        """`signature`: (inputs, outputs) the model answers to, when they are not the
        session's own (a search model runs an embedding model's session)."""
        self.name = name
        self.version = version
        self.path = path
        self.session = session
        self.card = dict(card)
        self.config = config or ServingConfig()
        if signature is None:
            signature = ([_spec(node) for node in session.get_inputs()],
                         [_spec(node) for node in session.get_outputs()])
        self.inputs, self.outputs = signature
        self.providers: list[str] = list(session.get_providers())
        self.device = device_of(self.providers)
        # Read back from the session: what ONNX Runtime really uses (0: its own default).
        options = session.get_session_options()
        self.intra_op_threads: int = options.intra_op_num_threads
        self.inter_op_threads: int = options.inter_op_num_threads
        self.statistics = ModelStatistics()
        # Requests taken on for this model and not yet answered (DataPlane.infer keeps it):
        # admission control reads it, and an unloaded version's session is released at 0.
        self.inflight = 0
        self._shrink_arena = _shrink_arena_options(self.device)
        # The most requests in flight at once (serving.json's, else the server's default);
        # more are refused RESOURCE_EXHAUSTED.
        self.max_queue_size = self.config.max_queue_size or DEFAULT_MAX_QUEUE_SIZE
        # A model batches when every tensor's first axis is free: the request's batch, and
        # the dynamic batcher's, which stacks requests along it.
        self.batchable = all(s.shape and s.shape[0] == -1 for s in self.inputs + self.outputs)
        batching = self.config.dynamic_batching
        if self.batchable:
            self.max_batch_size = min(max_batch_size, batching.max_batch_size or max_batch_size)
        else:
            self.max_batch_size = 0
        # Rows the batcher waits for (up to max_queue_delay_us) before it runs a batch.
        self.preferred_batch_sizes = [
            size for size in batching.preferred_batch_sizes if size <= max(self.max_batch_size, 1)
        ]
        self._inputs_by_name = {s.name: s for s in self.inputs}
        self._output_names = [s.name for s in self.outputs]
        self.output_datatypes = {s.name: s.datatype for s in self.outputs}
        meta = session.get_modelmeta().custom_metadata_map
        labels = self.card.get("labels") or json.loads(meta.get("labels", "null") or "null")
        self.labels: list[str] | None = [str(x) for x in labels] if labels else None
        # The cost of one run, from the warm-up: fixed part and per row (0: not measured).
        self.run_ns = 0
        self.row_ns = 0
        self.warm_up_problem = ""
        self.inline_below_ns = INLINE_BELOW_NS  # `inline_limit` of the process's CPU limit

    @classmethod
    def load(
        cls,
        name: str,
        version: int,
        path: Path,
        device: str,
        max_batch_size: int,
        intra_op_threads: int = 0,
        create: SessionFactory | None = None,
        cache_dir: Path | None = None,
        inline_below_ns: int = INLINE_BELOW_NS,
        max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE,
        verified: Mapping[str, str] | None = None,
    ) -> LoadedModel:
        """`verified`: the sha256 of the version's files, as the repository checked them
        before this load (zooserve/serving/repository_files.py); a search model's library uses them,
        a model's session needs nothing more."""
        config = read_serving_config(path.parent.parent)
        session = open_model_session(path, device, config, intra_op_threads, create, cache_dir)
        model = cls(name, version, path, session, layout.read_card(path.parent),
                    max_batch_size, config)
        model.get_ready(inline_below_ns, max_queue_size)
        return model

    def get_ready(self, inline_below_ns: int, max_queue_size: int) -> None:
        """The server's limits (its serving.json's queue size wins), then the warm-up."""
        self.inline_below_ns = inline_below_ns
        self.max_queue_size = self.config.max_queue_size or max_queue_size
        self.warm_up()

    @property
    def task(self) -> str:
        return str(self.card.get("task", ""))

    def _who(self) -> str:
        return f"model '{self.name}' version {self.version}"

    def warm_up(self) -> None:
        """Run the model on zeros before the first request, so that request does not pay
        for ONNX Runtime's first-run allocations, and time it: one row and, for a model
        that batches, eight rows. A model that cannot run on zeros still serves; it is
        then run on a thread, never inline."""
        try:
            for rows in (1, 8) if self.batchable else (1,):
                feeds = self.warm_up_feeds(rows)
                self.execute(feeds, self._output_names)  # the first run allocates
                times = []
                for _ in range(WARM_UP_RUNS):
                    start = time.perf_counter_ns()
                    self.execute(feeds, self._output_names)
                    times.append(time.perf_counter_ns() - start)
                median = sorted(times)[len(times) // 2]
                if rows == 1:
                    self.run_ns = median
                else:
                    self.row_ns = max(0, (median - self.run_ns) // (rows - 1))
        except Exception as exc:
            self.warm_up_problem = _one_line(exc)
            self.run_ns = self.row_ns = 0
            log.warning("warm-up of %s failed (%s); it serves, on a thread", self._who(),
                        self.warm_up_problem)

    def warm_up_feeds(self, rows: int) -> dict[str, np.ndarray]:
        """What the warm-up runs: zeros of every input."""
        return {s.name: _zeros(s, rows) for s in self.inputs}

    def runs_inline(self, rows: int) -> bool:
        """Whether a run of this many rows is made on the event loop rather than a thread:
        `execution` in serving.json, or (auto) when the warm-up says it is cheaper than the
        hand-off."""
        if self.config.execution != "auto":
            return self.config.execution == "inline"
        if not self.run_ns or self.device == "GPU":
            return False
        return self.estimate_ns(rows) < self.inline_below_ns

    def estimate_ns(self, rows: int) -> int:
        """A run's expected time from the warm-up (0 when it was not timed)."""
        return self.run_ns + (rows - 1) * self.row_ns if self.run_ns else 0

    def input_spec(self, name: str) -> TensorSpec:
        """The signature of one input; a name the model does not have is the client's
        mistake, answered with the names it does have."""
        spec = self._inputs_by_name.get(name)
        if spec is None:
            raise invalid_argument(
                f"{self._who()} has no input {quoted(name)}; its inputs are: "
                + ", ".join(s.name for s in self.inputs)
            )
        return spec

    def check_datatype(self, spec: TensorSpec, declared: str) -> None:
        """The datatype a client declared for an input, against the signature, before any
        element is converted."""
        if declared != spec.datatype:
            shown = declared if declared in NUMPY_BY_DATATYPE else quoted(declared)
            raise invalid_argument(
                f"input '{spec.name}': datatype {shown} given, "
                f"{self._who()} expects {spec.datatype}"
            )

    def validate(self, inputs: Mapping[str, np.ndarray]) -> int:
        """Check the request against the signature; return its batch size (1 if unbatched).

        Frontends have already checked each input's name and declared datatype while
        decoding; the element type is checked again here (a dtype comparison) for callers
        that hand the core arrays directly."""
        for name in inputs:
            self.input_spec(name)
        batch_sizes = set()
        for spec in self.inputs:
            if spec.name not in inputs:
                raise invalid_argument(
                    f"input '{spec.name}' is missing; {self._who()} needs inputs: "
                    + ", ".join(s.name for s in self.inputs)
                )
            self.check_array(spec, inputs[spec.name])
            if self.batchable:
                batch_sizes.add(inputs[spec.name].shape[0])
        return self.batch_size(batch_sizes)

    def check_array(self, spec: TensorSpec, array: np.ndarray) -> None:
        """One input's element type and shape against its signature."""
        if array.dtype != spec.dtype:
            raise invalid_argument(
                f"input '{spec.name}': elements of numpy type {array.dtype} given, "
                f"{self._who()} expects {spec.datatype}"
            )
        _check_shape(spec, array.shape, self._who())

    def batch_size(self, sizes: set[int], counted: str = "the batch size") -> int:
        """The request's one batch size (1 if none: an unbatched model), within the maximum;
        `counted` names what the inputs would disagree on."""
        if len(sizes) > 1:
            raise invalid_argument(
                f"inputs of {self._who()} disagree on {counted}: {sorted(sizes)}"
            )
        batch = next(iter(sizes)) if sizes else 1
        if self.max_batch_size and batch > self.max_batch_size:
            raise invalid_argument(
                f"batch size {batch} exceeds the maximum of {self.max_batch_size} "
                f"for {self._who()}"
            )
        return batch

    def output_names(self, requested: Sequence[str] | None) -> list[str]:
        if not requested:
            return self._output_names
        for name in requested:
            if name not in self._output_names:
                raise invalid_argument(
                    f"model '{self.name}' has no output {quoted(name)}; its outputs are: "
                    + ", ".join(self._output_names)
                )
        return list(dict.fromkeys(requested))

    def config_parameters(self) -> dict[str, str]:
        """Parameters of its own for the model configuration (a search model's library)."""
        return {}

    def prepare(
        self, inputs: Mapping[str, np.ndarray], requested_outputs: Sequence[str] | None = None,
        parameters: Mapping[str, object] | None = None,
    ) -> PreparedRequest:
        """Check one request and put its inputs in the form ONNX Runtime takes; a client's
        mistake raises INVALID_ARGUMENT here, before the request joins a batch. Request
        parameters are accepted and unused, as Triton's ONNX Runtime backend does."""
        rows = self.validate(inputs)
        names = self.output_names(requested_outputs)
        feeds = {spec.name: _feed(spec, inputs[spec.name]) for spec in self.inputs}
        return PreparedRequest(rows, feeds, names)

    def execute(self, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
        """One ONNX Runtime run; its errors become ServingErrors. A run of more than
        ARENA_KEEP_ROWS rows gives the memory it made ONNX Runtime's arena take back when it
        ends (arena shrinkage): small runs, the usual ones, keep the arena warm, and a burst
        of large batches does not leave the process holding its peak for good."""
        options = None
        if self.batchable and feeds:
            rows = next(iter(feeds.values())).shape[0]
            if rows > ARENA_KEEP_ROWS:
                options = self._shrink_arena
        try:
            return self.session.run(names, feeds, options)
        except Exception as exc:  # ONNX Runtime's own errors
            raise _runtime_error(self.name, exc) from exc


def open_model_session(
    model_file: Path, device: str, config: ServingConfig, intra_op_threads: int = 0,
    create: SessionFactory | None = None, cache_dir: Path | None = None,
) -> ort.InferenceSession:
    """The session a repository model runs: its serving.json's own thread count wins over
    the server's, and sessions share the optimised-model cache."""
    if config.intra_op_threads is not None:
        intra_op_threads = config.intra_op_threads
    if create is None:
        create = functools.partial(_create_session, cache_dir=cache_dir)
    return open_session(model_file, device, create=create, intra_op_threads=intra_op_threads)


def _shrink_arena_options(device: str):
    import onnxruntime as ort

    options = ort.RunOptions()
    arenas = "cpu:0;gpu:0" if device == "GPU" else "cpu:0"
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", arenas)
    return options


def _zeros(spec: TensorSpec, rows: int) -> np.ndarray:
    shape = [rows if axis == 0 and d == -1 else max(d, 1) for axis, d in enumerate(spec.shape)]
    if spec.datatype == "BYTES":
        return object_array([""] * math.prod(shape), shape)
    return np.zeros(shape, dtype=spec.dtype)


def _check_shape(spec: TensorSpec, shape: tuple[int, ...], who: str) -> None:
    if len(shape) != len(spec.shape):
        raise invalid_argument(
            f"input '{spec.name}': shape {list(shape)} has rank {len(shape)}, "
            f"{who} expects rank {len(spec.shape)} {list(spec.shape)}"
        )
    for axis, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if want != -1 and got != want:
            raise invalid_argument(
                f"input '{spec.name}': shape {list(shape)} does not match "
                f"{list(spec.shape)}: axis {axis} must be {want}, got {got}"
            )


def _feed(spec: TensorSpec, array: np.ndarray) -> np.ndarray:
    """The array as ONNX Runtime takes it: contiguous native-order numbers, or for BYTES
    Python str elements (its string tensors hold UTF-8 text; bytes would be str()-ed)."""
    if spec.datatype == "BYTES":
        texts = []
        for index, item in enumerate(array.reshape(-1)):
            try:
                texts.append(item.decode("utf-8") if isinstance(item, bytes) else str(item))
            except UnicodeDecodeError:
                raise invalid_argument(
                    f"input '{spec.name}': element {index} is not UTF-8 text, which an ONNX "
                    "string tensor must hold"
                ) from None
        return object_array(texts, array.shape)
    if not array.dtype.isnative:
        array = array.astype(array.dtype.newbyteorder("="))
    return np.ascontiguousarray(array)


def _runtime_error(model: str, exc: Exception) -> ServingError:
    # ONNX Runtime rejects some inputs the signature check cannot see (symbolic dimensions
    # that must agree across inputs): still the client's request. Anything else is ours.
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    if isinstance(exc, InvalidArgument):
        return ServingError(ErrorKind.INVALID_ARGUMENT, f"model '{model}': {exc}")
    return ServingError(ErrorKind.INTERNAL, f"model '{model}' failed to run: {exc}")

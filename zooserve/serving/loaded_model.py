"""One loaded model: an ONNX Runtime session, the signature read from it, its card, the
execution providers really in use, its statistics and what its runs cost. Requests are checked
against the signature here, before they reach ONNX Runtime. How sessions are made (providers,
devices, the optimised-graph cache) is `zooserve.serving.onnx_sessions`; whether a run is made
on the event loop is `zooserve.serving.inline_runs`."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from zooserve.protocol.codecs import object_array
from zooserve.protocol.datatypes import DATATYPE_BY_ONNX, NUMPY_BY_DATATYPE
from zooserve.protocol.errors import ErrorKind, ServingError, invalid_argument, one_line, quoted
from zooserve.serving.inline_runs import INLINE_BELOW_NS
from zooserve.serving.onnx_sessions import device_of, open_session, shrink_arena_options
from zooserve.serving.serving_config import (
    DEFAULT_MAX_QUEUE_SIZE,
    ServingConfig,
    read_serving_config,
)
from zooserve.serving.statistics import ModelStatistics

if TYPE_CHECKING:  # onnxruntime is imported where a session is made, not to read this module
    import onnxruntime as ort

    from zooserve.repository.layout import ModelEntry
    from zooserve.serving.load_options import LoadOptions

log = logging.getLogger(__name__)

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


# Runs of more rows than this hand the memory they grew ONNX Runtime's arena by back afterwards
# (LoadedModel.execute); measured in `benchmarks/memory.py`.
ARENA_KEEP_ROWS = 64
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
        self._shrink_arena = shrink_arena_options(self.device)
        # The most requests waiting to run at once (serving.json's, else the server's
        # default); the DataPlane refuses more RESOURCE_EXHAUSTED.
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
        # Runs estimated cheaper than this are made on the event loop (`inline_runs`).
        self.inline_below_ns = INLINE_BELOW_NS

    @classmethod
    def load(
        cls, entry: ModelEntry, options: LoadOptions, verified: Mapping[str, str]
    ) -> LoadedModel:
        """The ONNX model kind: a version folder's model.onnx, with its folder's card and its
        model's serving.json, warmed up. `verified`, the sha256 of the files the repository
        has just checked, is for kinds that read more files; a session needs nothing more."""
        config = read_serving_config(entry.folder.parent)
        session = open_model_session(entry.path, config, options)
        model = cls(entry.name, entry.version, entry.path, session, entry.read_card(),
                    options.max_batch_size, config)
        model.get_ready(options.inline_below_ns, options.max_queue_size)
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
            self.warm_up_problem = one_line(exc)
            self.run_ns = self.row_ns = 0
            log.warning("warm-up of %s failed (%s); it serves, on a thread", self._who(),
                        self.warm_up_problem)

    def warm_up_feeds(self, rows: int) -> dict[str, np.ndarray]:
        """What the warm-up runs: zeros of every input."""
        return {s.name: _zeros(s, rows) for s in self.inputs}


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
    model_file: Path, config: ServingConfig, options: LoadOptions
) -> ort.InferenceSession:
    """The session a repository model runs, on the device and with the threads the server's
    load options say (its serving.json's own thread count wins); sessions share the
    optimised-model cache."""
    threads = options.intra_op_threads
    if config.intra_op_threads is not None:
        threads = config.intra_op_threads
    return open_session(model_file, options.device, create=options.create,
                        intra_op_threads=threads, cache_dir=options.cache_dir)


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

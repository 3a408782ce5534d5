"""A spectral library served as a model: a version folder holding a library bundle
(library.json) is loaded as a SearchModel (the server's table of model kinds keys this kind
by that file, `zooserve.serving.model_kinds`), which answers like any other model (index,
metadata, configuration, statistics, the batcher) with the top-k library entries for each
query spectrum.

A query comes in one of three forms, each a set of inputs:
- raw peaks: `mz` and `intensity` (FP32 [B, P], zero-padded) with `n_peaks` (INT32 [B]),
  binned here by the contract the library was built with;
- `spectrum`: already binned (FP32 [B, bins]);
- `embedding`: already embedded (FP32 [B, dimension]).
An optional `precursor_mz` (FP32 [B]; NaN: none for that row) keeps only entries within
`precursor_tolerance` of it. Request parameters: `top_k` (default 10, at most MAX_TOP_K),
`min_score`, `precursor_mz` (one value for every row) and `precursor_tolerance` (m/z, default
1.0). Outputs, [B, top_k], best first: `ids` (BYTES), `scores` (FP32 cosine) and `metadata`
(BYTES, the entry's JSON); a column with no entry left has id "", score NaN and metadata "".

Requests of any top-k batch together: the batch runs with its largest k and each request
keeps its own first columns."""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from zooserve.protocol.errors import invalid_argument, quoted
from zooserve.repository.layout import MODEL_FILE, ModelEntry, read_card
from zooserve.serving.inline_runs import INLINE_BELOW_NS
from zooserve.serving.load_options import LoadOptions
from zooserve.serving.loaded_model import (
    LoadedModel,
    PreparedRequest,
    TensorSpec,
    open_model_session,
)
from zooserve.serving.repository_files import FileRefused, check_model_file, safe_name
from zooserve.serving.search.backends import (
    ANN_MIN_RECALL,
    BackendUnavailable,
    ExactBackend,
    FaissBackend,
    QdrantBackend,
    SearchBackend,
    load_faiss_index,
    open_qdrant,
)
from zooserve.serving.search.library import ANN_FILE, Library, LibraryError
from zooserve.serving.serving_config import (
    ServingConfig,
    read_serving_config,
)
from zooserve.spectra.binning import METADATA_KEY, Binning, PeakProblem, bin_padded

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 10
MAX_TOP_K = 100
DEFAULT_PRECURSOR_TOLERANCE = 1.0  # m/z either side, as omigami's ±1 Da window
PEAKS = ("mz", "intensity", "n_peaks")
QUERY_FORMS = {"raw peaks": PEAKS, "binned spectrum": ("spectrum",),
               "embedding": ("embedding",)}
PARAMETERS = ("top_k", "min_score", "precursor_mz", "precursor_tolerance")
# Parameters the protocol reserves for the server or a frontend (Triton's names): accepted,
# not ours to read.
RESERVED_PARAMETERS = frozenset({"sequence_id", "sequence_start", "sequence_end", "priority",
                                 "timeout", "headers", "binary_data_output"})


class SearchModel(LoadedModel):
    platform = "zooserve_spectral_search"
    backend = "zooserve"

    def __init__(
        self, name: str, version: int, path: Path, session, card: Mapping,
        max_batch_size: int, config: ServingConfig, library: Library, search: SearchBackend,
    ) -> None:
        self.library = library
        self.search = search
        self._embed_input = session.get_inputs()[0].name
        self._embed_output = session.get_outputs()[0].name
        bins, dimension = library.binning.bins, library.dimension
        inputs = [
            TensorSpec("mz", "FP32", (-1, -1)),
            TensorSpec("intensity", "FP32", (-1, -1)),
            TensorSpec("n_peaks", "INT32", (-1,)),
            TensorSpec("spectrum", "FP32", (-1, bins)),
            TensorSpec("embedding", "FP32", (-1, dimension)),
            TensorSpec("precursor_mz", "FP32", (-1,)),
        ]
        outputs = [
            TensorSpec("ids", "BYTES", (-1, -1)),
            TensorSpec("scores", "FP32", (-1, -1)),
            TensorSpec("metadata", "BYTES", (-1, -1)),
        ]
        super().__init__(name, version, path, session, card, max_batch_size, config,
                         signature=(inputs, outputs))
        self.labels = None

    @classmethod
    def load(
        cls, entry: ModelEntry, options: LoadOptions, verified: Mapping[str, str]
    ) -> SearchModel:
        """The search model kind: open the bundle of `entry` (its library.json) and the
        embedding model it was built with. Refused, with the reason, when that model is not
        in the repository or its file is not the one the library's embeddings came from.
        `verified`: sha256 of files the repository has just checked, not read again."""
        path = entry.path
        folder = path.parent
        library = Library.open(folder, root=folder.parent.parent, verified=verified)
        model_file = embedding_model_file(folder.parent.parent, library)
        config = read_serving_config(folder.parent)
        session = open_model_session(model_file, config, options)
        _check_embedding_session(session, library)
        model = cls(entry.name, entry.version, path, session, read_card(folder),
                    options.max_batch_size, config, library, open_backend(library))
        # A search spends its time in numpy and ONNX Runtime calls that let go of the GIL: on
        # a thread it leaves the event loop free to take the requests that arrive meanwhile,
        # which then share the next run. Only one cheaper than a hand-off runs inline.
        model.get_ready(min(options.inline_below_ns, INLINE_BELOW_NS), options.max_queue_size)
        return model

    @property
    def binning(self) -> Binning:
        return self.library.binning

    def config_parameters(self) -> dict[str, str]:
        return {
            "library": json.dumps(self.library.summary()),
            "input_binning": self.binning.to_json(),
            "default_top_k": str(DEFAULT_TOP_K),
            "max_top_k": str(MAX_TOP_K),
            "default_precursor_tolerance": str(DEFAULT_PRECURSOR_TOLERANCE),
        }

    # requests

    def validate(self, inputs: Mapping[str, np.ndarray]) -> int:
        """The query's form (exactly one of QUERY_FORMS) and its batch size."""
        for name in inputs:
            self.input_spec(name)
        forms = [form for form, names in QUERY_FORMS.items() if any(n in inputs for n in names)]
        if len(forms) != 1:
            raise invalid_argument(
                f"{self._who()} takes a query as one of: " + "; ".join(
                    f"{form} ({' + '.join(names)})" for form, names in QUERY_FORMS.items())
                + (f", not several ({', '.join(forms)} given)" if forms else ", none given"))
        missing = [n for n in QUERY_FORMS[forms[0]] if n not in inputs]
        if missing:
            raise invalid_argument(
                f"a query as {forms[0]} needs inputs {' + '.join(QUERY_FORMS[forms[0]])}; "
                f"missing: {', '.join(missing)}")
        for name, array in inputs.items():
            self.check_array(self.input_spec(name), array)
        return self.batch_size({array.shape[0] for array in inputs.values()},
                               "the number of queries")

    def prepare(
        self, inputs: Mapping[str, np.ndarray], requested_outputs: Sequence[str] | None = None,
        parameters: Mapping[str, object] | None = None,
    ) -> PreparedRequest:
        """Check a query and put it in the form `execute` takes: one vector per row (binned
        or embedded), with each row's k, score floor and precursor window."""
        rows = self.validate(inputs)
        names = self.output_names(requested_outputs)
        top_k, min_score, precursor, tolerance = self._parameters(parameters or {})
        if "mz" in inputs:
            try:
                vectors = bin_padded(inputs["mz"], inputs["intensity"], inputs["n_peaks"],
                                     self.binning)
            except PeakProblem as exc:
                raise invalid_argument(f"inputs 'mz'/'intensity'/'n_peaks': {exc}") from None
            embedded = False
        else:
            name = "spectrum" if "spectrum" in inputs else "embedding"
            vectors = np.ascontiguousarray(inputs[name], dtype=np.float32)
            bad = np.argwhere(~np.isfinite(vectors))
            if bad.size:
                raise invalid_argument(f"input '{name}': row {bad[0][0]}, column "
                                       f"{bad[0][1]} is not a finite number")
            embedded = name == "embedding"
        windows = np.full((rows, 2), np.nan)
        if "precursor_mz" in inputs:
            if precursor is not None:
                raise invalid_argument("precursor m/z given twice: as the input "
                                       "'precursor_mz' and as a request parameter; send one")
            centres = inputs["precursor_mz"].astype(np.float64)
            bad = np.flatnonzero(~np.isnan(centres) & ~(np.isfinite(centres) & (centres > 0)))
            if bad.size:
                raise invalid_argument(f"input 'precursor_mz': row {bad[0]} is "
                                       f"{centres[bad[0]]}; give a positive m/z (NaN: none)")
        else:
            centres = np.full(rows, np.nan if precursor is None else precursor)
        windows[:, 0], windows[:, 1] = centres - tolerance, centres + tolerance
        feeds = {
            "vectors": vectors,
            "embedded": np.full(rows, embedded),
            "top_k": np.full(rows, top_k, dtype=np.int32),
            "min_score": np.full(rows, np.nan if min_score is None else min_score,
                                 dtype=np.float32),
            "windows": windows,
        }
        return PreparedRequest(rows, feeds, names, functools.partial(_first_columns, top_k))

    def _parameters(self, parameters: Mapping[str, object]):
        unknown = [k for k in parameters if k not in PARAMETERS and k not in RESERVED_PARAMETERS]
        if unknown:
            raise invalid_argument(
                f"{self._who()} has no parameter {quoted(unknown[0])}; its parameters are: "
                + ", ".join(PARAMETERS))
        top_k = parameters.get("top_k", DEFAULT_TOP_K)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
            raise invalid_argument(
                f"parameter 'top_k': {top_k!r} is not a whole number from 1 to {MAX_TOP_K} "
                f"(the most {self._who()} answers per query)")
        min_score = _number(parameters, "min_score", lambda v: -1.0 <= v <= 1.0,
                            "a cosine score from -1 to 1")
        precursor = _number(parameters, "precursor_mz", lambda v: v > 0, "a positive m/z")
        tolerance = _number(parameters, "precursor_tolerance", lambda v: v >= 0,
                            "an m/z of 0 or more")
        if tolerance is None:
            tolerance = DEFAULT_PRECURSOR_TOLERANCE
        return top_k, min_score, precursor, tolerance

    # runs

    def warm_up_feeds(self, rows: int) -> dict[str, np.ndarray]:
        """A binned query of zeros: the warm-up times embedding and search together."""
        return {
            "vectors": np.zeros((rows, self.binning.bins), dtype=np.float32),
            "embedded": np.zeros(rows, dtype=bool),
            "top_k": np.full(rows, DEFAULT_TOP_K, dtype=np.int32),
            "min_score": np.full(rows, np.nan, dtype=np.float32),
            "windows": np.full((rows, 2), np.nan),
        }

    def execute(self, feeds: Mapping[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
        """Embed the rows that are not embeddings yet (one ONNX Runtime run), normalise,
        search with the batch's largest k, and answer the outputs asked for."""
        vectors, embedded = feeds["vectors"], feeds["embedded"]
        if embedded.all():
            queries = vectors.astype(np.float32, copy=True)
        else:
            queries = np.empty((len(vectors), self.library.dimension), dtype=np.float32)
            todo = ~embedded
            queries[todo] = super().execute({self._embed_input: vectors[todo]},
                                            [self._embed_output])[0]
            queries[embedded] = vectors[embedded]
        norms = np.linalg.norm(queries, axis=1, keepdims=True)
        queries /= np.where(norms > 0, norms, 1.0)
        windows = feeds["windows"]
        min_score = feeds["min_score"]
        matches = self.search.search(
            queries, int(feeds["top_k"].max()),
            windows if not np.isnan(windows).all() else None,
            min_score if not np.isnan(min_score).all() else None,
        )
        found = matches.indices >= 0
        answers = {"scores": np.where(found, matches.scores, np.nan).astype(np.float32)}
        if "ids" in names or "metadata" in names:
            lines = np.full(matches.indices.shape, b"", dtype=object)
            ids = np.full(matches.indices.shape, b"", dtype=object)
            for place in zip(*np.nonzero(found), strict=True):
                lines[place] = self.library.entry_bytes(int(matches.indices[place]))
                if "ids" in names:
                    ids[place] = json.loads(lines[place])["id"].encode()
            answers["metadata"], answers["ids"] = lines, ids
        return [answers[name] for name in names]


def _first_columns(k: int, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {name: array[:, :k] for name, array in outputs.items()}


def _number(parameters: Mapping[str, object], name: str, allowed, what: str) -> float | None:
    value = parameters.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not math.isfinite(value) or not allowed(value):
        raise invalid_argument(f"parameter {quoted(name)}: {value!r} is not {what}")
    return float(value)


def embedding_model_file(root: Path, library: Library) -> Path:
    """The repository's file of the model the library was built with, checked to be the
    very file (sha256) and to bin spectra as the library did."""
    ref = library.embedding_model
    if not safe_name(ref.name) or "/" in ref.name:
        raise LibraryError(f"library '{library.name}': its manifest's embedding model is not "
                           "a model folder's name (a path, or one with '..')")
    model_file = root / ref.name / str(ref.version) / MODEL_FILE
    try:  # the boundary and the model's own card, as for any version served
        actual = check_model_file(root, model_file)
    except FileRefused as exc:
        missing = str(exc) == f"{MODEL_FILE} is missing"
        raise LibraryError(
            f"library '{library.name}' was built with embedding model {ref.describe()}, "
            + ("which is not in the repository" if missing else f"which is refused: {exc}")
        ) from None
    if actual != ref.sha256:
        raise LibraryError(
            f"library '{library.name}' was built with embedding model {ref.describe()}, but "
            f"that model's file now has sha256 {actual[:16]}...: its embeddings would not "
            f"match the queries'; rebuild the library (zooserve library build --model "
            f"{ref.name} ...)")
    binning = read_card(model_file.parent).get(METADATA_KEY)
    if binning is not None and Binning.from_dict(binning) != library.binning:
        raise LibraryError(
            f"library '{library.name}' was binned as {library.binning.describe()}, its "
            f"embedding model's card says {Binning.from_dict(binning).describe()}")
    return model_file


def _check_embedding_session(session, library: Library) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise LibraryError("an embedding model takes one input and gives one output")
    width, dimension = inputs[0].shape[-1], outputs[0].shape[-1]
    if width != library.binning.bins or dimension != library.dimension:
        raise LibraryError(
            f"the embedding model maps {width} bins to {dimension} numbers; library "
            f"'{library.name}' has {library.binning.bins} bins and {library.dimension}")


def open_backend(library: Library) -> SearchBackend:
    """The backend the library's manifest names. An ANN index is used only with the recall
    its build measured (at least ANN_MIN_RECALL); without faiss installed the library is
    searched exactly instead (same results, slower), with a warning."""
    exact = ExactBackend(library.embeddings, library.precursor_mz)
    settings = library.backend
    kind = settings.get("kind", "exact")
    if kind == "exact":
        return exact
    if kind == "ann":
        recall = float(settings.get("recall_at_10", 0.0))
        if recall < ANN_MIN_RECALL:
            raise LibraryError(f"library '{library.name}': its ANN index's measured "
                               f"recall@10 {recall} is below {ANN_MIN_RECALL}")
        try:
            index = load_faiss_index(library.folder / ANN_FILE)
        except BackendUnavailable as exc:
            log.warning("library '%s': %s; searching it exactly instead", library.name, exc)
            return exact
        return FaissBackend(index, library.precursor_mz, exact)
    if kind == "qdrant":
        location = library.qdrant_location()
        return QdrantBackend(open_qdrant(location), str(settings["collection"]),
                             library.count)
    raise LibraryError(f"library '{library.name}': unknown backend {kind!r}")

"""`zooserve.Client`: predictions from a zooserve (or any Open Inference Protocol v2) server,
in labels, for people who want answers rather than tensors.

```python
import zooserve

with zooserve.Client("localhost:8001") as client:
    result = client.predict("penguins", [[39.1, 18.7, 181, 3750]])
    result.predicted()  # ['Adelie']
    result.to_frame()   # a DataFrame, one column per label
```

The input can be a numpy array, a nested list, a pandas DataFrame (its columns matched by
name to the model's `feature_names` and put in the card's order) or, for a model with several
inputs, a dict {input name: array}. The datatype comes from the model's metadata, which the
client asks for once per (model, version) and keeps: every later `predict` is one ModelInfer
call. A call that fails with NOT_FOUND, INVALID_ARGUMENT or FAILED_PRECONDITION (or a
mistake found in the client) drops what was kept, so a model reloaded with another
signature is asked for again.

Every failure is a `ClientError`: `.code` is the gRPC status name (None for a mistake found
before anything was sent) and the message is the server's own, or one line saying what is
wrong.

`search` asks a spectral library (a search model) for the entries most like some query
spectra: an MGF file, `zooserve.spectra.mgf.Spectrum`s or dicts of peaks go in, `SearchResults` come
out (`Match`es per query, best first, with each entry's metadata).

```python
with zooserve.Client("localhost:8001") as client:
    results = client.search("spectra_search", "queries.mgf", top_k=5)
    results.matches[0][0].id  # the best match of the first query
    print(results.describe())
```

`AsyncClient` has the same methods as coroutines over `grpc.aio`. Both share every step
between the wire and the caller: each method is written once, as a generator that yields
the RPCs it needs (`_Call`) and gets their answers back; the two clients only differ in how
they send an RPC (`Client._drive` and `AsyncClient._drive`, both around `_Run`).

Needs numpy, grpcio and protobuf (`pip install 'zooserve[client]'`), pandas only for
DataFrames and `to_frame()`; nothing of the server (ONNX Runtime) is imported."""

from __future__ import annotations

import json
import math
import numbers
import os
import sys
import time
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from zooserve.protocol import codecs
from zooserve.protocol import grpc_tensors as tensors
from zooserve.protocol.credentials import PemSource, tls_credentials
from zooserve.protocol.errors import ServingError
from zooserve.protocol.generated import grpc_service_pb2 as pb
from zooserve.protocol.generated import grpc_service_pb2_grpc as pb_grpc
from zooserve.protocol.labels import labelled_output
from zooserve.spectra.binning import pad_peaks
from zooserve.spectra.mgf import Spectrum, read_mgf

__all__ = ["AsyncClient", "Client", "ClientError", "Match", "ModelEntry", "ModelInfo",
           "Prediction", "SearchResults", "TensorInfo"]

# As large as the server takes and sends (zooserve.serving.grpc_frontend.server.MAX_MESSAGE_BYTES).
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# Server answers after which what the client keeps about a model may be out of date.
STALE_CODES = frozenset({"NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION"})
# The ModelConfig platform of a spectral library (zooserve.serving.search.model.SearchModel).
SEARCH_PLATFORM = "zooserve_spectral_search"
# The keys a query given as a dict may have.
QUERY_KEYS = ("mz", "intensity", "precursor_mz", "id")


class ClientError(Exception):
    """A call that failed. `code`: the gRPC status name (`NOT_FOUND`, `UNAVAILABLE`, ...), or
    None for a mistake the client found before sending anything. The message is the
    server's details, or one line saying what is wrong."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


# What the client reads about a model


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str  # the protocol's name: FP32, INT64, BYTES, ...
    shape: tuple[int, ...]  # -1 for a free axis (the batch)


@dataclass(frozen=True)
class ModelInfo:
    """A model version's metadata and the parts of its ModelConfig a client needs."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    labels: list[str] | None
    feature_names: list[str] | None
    description: str
    task: str

    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]


@dataclass(frozen=True)
class ModelEntry:
    """One row of the repository index."""

    name: str
    version: str
    state: str  # READY, UNAVAILABLE, ...
    reason: str


@dataclass
class Prediction:
    """A model's answer: `outputs` by name as numpy arrays, and in labels where the model
    has them."""

    model: str
    version: str
    outputs: dict[str, np.ndarray]
    labels: list[str] | None
    index: Any = field(default=None, repr=False)  # the input DataFrame's index, if any

    def predicted(self) -> list[str]:
        """The most likely label of each row (the lesson's `idxmax(axis="columns")`)."""
        return [self.labels[i] for i in self._scores().argmax(axis=1).tolist()]

    def to_frame(self):
        """A pandas DataFrame: the labelled output with one column per label, as the lesson
        builds it with `pd.DataFrame(y_pred, columns=labels)`; for a model without labels,
        its outputs side by side (`name`, or `name_0`, `name_1`, ... for several columns).
        The rows keep the index of the DataFrame that was sent."""
        try:
            import pandas as pd
        except ImportError:
            raise ClientError("to_frame() needs pandas: pip install pandas") from None
        if self.labels:
            return pd.DataFrame(self._scores(), columns=list(self.labels), index=self.index)
        columns: dict[str, np.ndarray] = {}
        for name, array in self.outputs.items():
            if array.ndim not in (1, 2):
                raise ClientError(
                    f"output '{name}' has shape {list(array.shape)}; to_frame() takes outputs "
                    "of one or two axes (read .outputs instead)"
                )
            table = array.reshape(len(array), -1)
            if table.shape[1] == 1:
                columns[name] = table[:, 0]
            else:
                columns.update({f"{name}_{i}": table[:, i] for i in range(table.shape[1])})
        return pd.DataFrame(columns, index=self.index)

    def describe(self) -> str:
        """What `zooserve predict` prints: the model and version, then per row the label
        with every label's probability (or each output's values, for a model without
        labels)."""
        lines = [f"model {self.model} version {self.version}"]
        found = labelled_output(self.labels, self.outputs) if self.labels else None
        for name, array in self.outputs.items():
            if found is not None and name == found[0]:
                for row in found[1]:
                    scores = ", ".join(f"{k}={p:.4f}" for k, p in row.probabilities.items())
                    lines.append(f"{row.label}  ({name}: {scores})")
            else:
                lines.append(f"{name} {list(array.shape)}: {np.array2string(array, precision=4)}")
        return "\n".join(lines)

    __str__ = describe

    def _scores(self) -> np.ndarray:
        """The labelled output as rows of one score per label."""
        return self.outputs[self._scored_output()].reshape(-1, len(self.labels))

    def _scored_output(self) -> str:
        """The output that has one score per label, picked as zooserve.protocol.labels picks it;
        asked
        of no rows (a 2-D output cut to none), so the choice costs the same for any batch."""
        if not self.labels:
            raise ClientError(
                f"model '{self.model}' has no labels (its card names none); read .outputs"
            )
        probe = {n: (a[:0] if a.ndim == 2 else a) for n, a in self.outputs.items()}
        found = labelled_output(self.labels, probe)
        if found is None:
            raise ClientError(
                f"model '{self.model}' has {len(self.labels)} labels but no output with one "
                "value per label"
            )
        return found[0]


@dataclass
class Match:
    """One library entry found for a query: its id, its score (cosine of the embeddings,
    higher is closer) and its metadata (id, precursor_mz and the library MGF's other fields,
    lower-cased: name, charge, ...)."""

    id: str
    score: float
    metadata: dict


@dataclass
class SearchResults:
    """A library's answer to some query spectra: `queries` (their ids, in the order sent),
    `matches` (per query, best first; fewer than top_k, or none, where fewer entries
    qualified) and `library` (the library's summary from its ModelConfig: name, version,
    count, dimension, embedding model, backend)."""

    queries: list[str]
    matches: list[list[Match]]
    library: dict

    def to_frame(self):
        """A pandas DataFrame, one row per match: query, rank (1 = best), id, score, then
        the metadata's fields (a field named like one of those four is prefixed
        `metadata_`)."""
        try:
            import pandas as pd
        except ImportError:
            raise ClientError("to_frame() needs pandas: pip install pandas") from None
        fixed = ("query", "rank", "id", "score")
        columns = list(fixed)
        rows = []
        for query, found in zip(self.queries, self.matches, strict=True):
            for rank, match in enumerate(found, start=1):
                row = {"query": query, "rank": rank, "id": match.id, "score": match.score}
                for key, value in match.metadata.items():
                    if key == "id":
                        continue
                    name = f"metadata_{key}" if key in fixed else key
                    if name not in columns:
                        columns.append(name)
                    row[name] = value
                rows.append(row)
        return pd.DataFrame(rows, columns=columns)

    def describe(self) -> str:
        """What `zooserve search` prints: the library, then a table of every query's
        matches (a query with none gets one row saying so)."""
        library = self.library
        lines = [f"library {library.get('name', '?')} version {library.get('version', '?')} "
                 f"({library.get('count', '?')} spectra)"]
        rows = [("QUERY", "RANK", "ID", "SCORE", "PRECURSOR_MZ", "NAME")]
        for query, found in zip(self.queries, self.matches, strict=True):
            if not found:
                rows.append((query, "-", "-", "-", "-", "no match"))
            for rank, match in enumerate(found, start=1):
                precursor = match.metadata.get("precursor_mz")
                rows.append((
                    query, str(rank), match.id, f"{match.score:.4f}",
                    f"{precursor:.4f}" if isinstance(precursor, int | float) else "-",
                    str(match.metadata.get("name", "-")),
                ))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
                         + "  " + row[5])
        return "\n".join(lines)

    __str__ = describe


# Requests and responses (no I/O)


def _model_info(
    metadata: pb.ModelMetadataResponse, config: pb.ModelConfigResponse
) -> ModelInfo:
    parameters = config.config.parameters

    def parameter(key: str) -> str:
        return parameters[key].string_value if key in parameters else ""

    def json_list(key: str) -> list[str] | None:
        text = parameter(key)
        return [str(item) for item in json.loads(text)] if text else None

    def tensor_infos(specs) -> list[TensorInfo]:
        return [TensorInfo(s.name, s.datatype, tuple(s.shape)) for s in specs]

    return ModelInfo(
        name=metadata.name, versions=list(metadata.versions), platform=metadata.platform,
        inputs=tensor_infos(metadata.inputs), outputs=tensor_infos(metadata.outputs),
        labels=json_list("labels"), feature_names=json_list("feature_names"),
        description=parameter("description"), task=parameter("task"),
    )


def _is_data_frame(value: object) -> bool:
    # A DataFrame can only exist once pandas is imported: no import here.
    pandas = sys.modules.get("pandas")
    return pandas is not None and isinstance(value, pandas.DataFrame)


def _frame_values(info: ModelInfo, frame) -> np.ndarray:
    """A DataFrame's values, its columns put in the order of the model's feature names."""
    columns = [str(c) for c in frame.columns]
    if len(set(columns)) != len(columns):
        repeated = sorted({c for c in columns if columns.count(c) > 1})
        raise ClientError(f"the DataFrame has repeated columns: {', '.join(repeated)}")
    names = info.feature_names
    if not names:  # the model names no features: the frame's own order
        return frame.to_numpy()
    missing = [n for n in names if n not in columns]
    extra = [c for c in columns if c not in names]
    if missing or extra:
        problems = []
        if missing:
            problems.append("missing columns " + ", ".join(missing))
        if extra:
            problems.append("columns the model does not take " + ", ".join(extra))
        raise ClientError(
            f"model '{info.name}': the DataFrame has {' and '.join(problems)}; its features "
            f"are {', '.join(names)}"
        )
    values = frame.to_numpy()
    if columns == names:
        return values
    # numpy's column take, not frame[names]: pandas' reindexing costs a millisecond a call
    return values[:, [columns.index(n) for n in names]]


def _as_array(spec: TensorInfo, value: object) -> np.ndarray:
    """One input as an array of its datatype, every element checked (zooserve.protocol.codecs)."""
    try:
        return codecs.decode_nested(spec.name, spec.datatype, value)
    except ServingError as exc:
        raise ClientError(exc.message) from None
    except (ValueError, TypeError) as exc:  # numpy could not convert, e.g. text to FP32
        raise ClientError(
            f"input '{spec.name}': the values cannot be read as {spec.datatype}: {exc}"
        ) from None


def _infer_request(
    info: ModelInfo, model: str, version: str, x: object
) -> tuple[pb.ModelInferRequest, Any]:
    """The ModelInfer request for `x`, and the index of `x` when it is a DataFrame."""
    index = None
    if isinstance(x, Mapping):
        values = dict(x)
        unknown = [str(n) for n in values if n not in info.input_names()]
        missing = [n for n in info.input_names() if n not in values]
        if unknown or missing:
            said = [f"no input {', '.join(unknown)}"] if unknown else []
            said += [f"missing {', '.join(missing)}"] if missing else []
            raise ClientError(
                f"model '{model}' {'; '.join(said)}: its inputs are {', '.join(info.input_names())}"
            )
    elif len(info.inputs) != 1:
        raise ClientError(
            f"model '{model}' has several inputs ({', '.join(info.input_names())}); pass a "
            "dict keyed by input name"
        )
    else:
        values = {info.inputs[0].name: x}
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for spec in info.inputs:
        value = values[spec.name]
        if _is_data_frame(value):
            index = value.index
            value = _frame_values(info, value)
        array = _as_array(spec, value)
        request.inputs.add(name=spec.name, datatype=spec.datatype, shape=array.shape)
        request.raw_input_contents.append(codecs.encode_raw(array))
    return request, index


def _prediction(info: ModelInfo, response: pb.ModelInferResponse, index: Any = None) -> Prediction:
    """The response's outputs, read as outputs against the datatypes the metadata announced
    (zooserve.protocol.grpc_tensors)."""
    announced = {o.name: o.datatype for o in info.outputs}
    raw = response.raw_output_contents
    outputs = {}
    try:
        for position, tensor in enumerate(response.outputs):
            buffer = raw[position] if position < len(raw) else None
            expected = announced.get(tensor.name, tensor.datatype)
            outputs[tensor.name] = tensors.decode_output(tensor, buffer, expected)
    except ServingError as exc:
        raise ClientError(f"the server's answer cannot be read: {exc.message}") from None
    return Prediction(response.model_name, response.model_version, outputs, info.labels, index)


# Searches (no I/O)


@dataclass(frozen=True)
class _Library:
    """What the client keeps about a spectral library: its summary, and how many queries
    one request may carry (0: any number)."""

    summary: dict
    max_batch_size: int

    def batches(self, count: int) -> list[tuple[int, int]]:
        """The [start, stop) ranges of `count` queries, one request each."""
        size = self.max_batch_size or count
        return [(start, min(start + size, count)) for start in range(0, count, size)]


def _library(name: str, config: pb.ModelConfigResponse) -> _Library:
    platform = config.config.platform
    if platform != SEARCH_PLATFORM:
        raise ClientError(f"model '{name}' is not a spectral library: its platform is "
                          f"{platform or 'not given'}, a library's is {SEARCH_PLATFORM}")
    parameters = config.config.parameters
    text = parameters["library"].string_value if "library" in parameters else ""
    try:
        summary = json.loads(text) if text else {}
    except ValueError:
        raise ClientError(f"library '{name}': the 'library' parameter of its ModelConfig is "
                          "not JSON") from None
    return _Library(summary if isinstance(summary, dict) else {},
                    max(0, config.config.max_batch_size))


@dataclass(frozen=True)
class _Queries:
    """Query spectra as the library takes raw peaks: zero-padded rows and their lengths."""

    ids: list[str]
    mz: np.ndarray  # float32 [queries, most peaks]
    intensity: np.ndarray  # float32, the same shape
    n_peaks: np.ndarray  # int32 [queries]
    precursor_mz: np.ndarray  # float32 [queries], NaN: none


def _named(position: int, query_id: str) -> str:
    default = f"query {position}"
    return default if query_id == default else f"{default} ('{query_id}')"


def _peak_values(who: str, what: str, value: object) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ClientError(f"{who}: its {what} cannot be read as numbers: {exc}") from None
    if array.ndim != 1:
        raise ClientError(f"{who}: its {what} must be one flat list, not of shape "
                          f"{list(array.shape)}")
    return array


def _query(position: int, query: object) -> tuple[str, np.ndarray, np.ndarray, float]:
    """A query's id, m/z values, intensities and precursor m/z (NaN: none)."""
    if isinstance(query, Spectrum):
        query_id, mz, intensity = query.id, query.mz, query.intensity
        precursor: object = query.precursor_mz
    elif isinstance(query, Mapping):
        given = query.get("id")
        query_id = f"query {position}" if given is None else str(given)
        unknown = [repr(k) for k in query if k not in QUERY_KEYS]
        missing = [k for k in ("mz", "intensity") if k not in query]
        if unknown or missing:
            said = [f"no key {', '.join(unknown)}"] if unknown else []
            said += [f"missing {' and '.join(missing)}"] if missing else []
            raise ClientError(f"{_named(position, query_id)}: {'; '.join(said)} (a query's "
                              f"keys are {', '.join(QUERY_KEYS)})")
        mz, intensity, precursor = query["mz"], query["intensity"], query.get("precursor_mz")
    else:
        raise ClientError(f"query {position} ({type(query).__name__}) is neither a "
                          "zooserve.spectra.mgf.Spectrum "
                          "nor a dict with keys " + ", ".join(QUERY_KEYS))
    who = _named(position, query_id)
    mz = _peak_values(who, "m/z values", mz)
    intensity = _peak_values(who, "intensities", intensity)
    if mz.size != intensity.size:
        raise ClientError(f"{who}: {mz.size} m/z values but {intensity.size} intensities")
    if precursor is None:
        return query_id, mz, intensity, math.nan
    if isinstance(precursor, bool) or not isinstance(precursor, numbers.Real):
        raise ClientError(f"{who}: precursor_mz {precursor!r} is not a number")
    return query_id, mz, intensity, float(precursor)


def _search_queries(spectra: object) -> _Queries:
    """The queries of an MGF file's path or of an iterable of Spectrum or dicts, checked
    only for what the client needs to send them; the peaks are the library's to judge."""
    if isinstance(spectra, str | os.PathLike):
        path = os.fspath(spectra)
        try:
            spectra = list(read_mgf(path))
        except OSError as exc:
            raise ClientError(f"cannot read {path}: {exc.strerror or exc}") from None
        except ValueError as exc:  # MgfError (which names the file and line), or not text
            said = str(exc)
            raise ClientError(said if said.startswith(path) else f"{path}: {said}") from None
    elif isinstance(spectra, Spectrum | Mapping):
        raise ClientError("spectra: one spectrum given; pass a list of them (or an MGF "
                          "file's path)")
    elif not isinstance(spectra, Iterable):
        raise ClientError(f"spectra: give an MGF file's path or a list of spectra (got "
                          f"{type(spectra).__name__})")
    read = [_query(position, query) for position, query in enumerate(spectra)]
    if not read:
        raise ClientError("no query spectra given")
    mz, intensity, n_peaks = pad_peaks((peaks, heights) for _, peaks, heights, _ in read)
    return _Queries(
        ids=[query_id for query_id, _, _, _ in read], mz=mz, intensity=intensity,
        n_peaks=n_peaks, precursor_mz=np.array([p for _, _, _, p in read], dtype=np.float32),
    )


def _search_parameters(
    top_k: int, precursor_tolerance: float | None, min_score: float | None
) -> dict[str, pb.InferParameter]:
    """The request parameters; their ranges are the library's to check."""
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral):
        raise ClientError(f"top_k must be a whole number, not {top_k!r}")
    if not -2**63 <= top_k < 2**63:
        raise ClientError(f"top_k {top_k} is out of range")
    parameters = {"top_k": pb.InferParameter(int64_param=int(top_k))}
    for name, value in (("precursor_tolerance", precursor_tolerance), ("min_score", min_score)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ClientError(f"{name} must be a number, not {value!r}")
        parameters[name] = pb.InferParameter(double_param=float(value))
    return parameters


def _search_request(
    library: str, version: str, queries: _Queries, rows: slice,
    parameters: Mapping[str, pb.InferParameter], with_precursor: bool,
) -> pb.ModelInferRequest:
    """The ModelInfer request for queries[rows]: raw peaks padded to the longest of them,
    and their precursor m/z when a window is asked for."""
    request = pb.ModelInferRequest(model_name=library, model_version=version)
    for name, value in parameters.items():
        request.parameters[name].CopyFrom(value)
    n_peaks = queries.n_peaks[rows]
    width = max(1, int(n_peaks.max()))
    inputs = [("mz", "FP32", queries.mz[rows, :width]),
              ("intensity", "FP32", queries.intensity[rows, :width]),
              ("n_peaks", "INT32", n_peaks)]
    if with_precursor:
        inputs.append(("precursor_mz", "FP32", queries.precursor_mz[rows]))
    for name, datatype, array in inputs:
        request.inputs.add(name=name, datatype=datatype, shape=array.shape)
        request.raw_input_contents.append(codecs.encode_raw(np.ascontiguousarray(array)))
    return request


def _search_matches(response: pb.ModelInferResponse, rows: int) -> list[list[Match]]:
    """Each query's matches from a library's answer, the padding columns (id "") left out."""
    raw = response.raw_output_contents
    outputs = {}
    try:
        for position, tensor in enumerate(response.outputs):
            buffer = raw[position] if position < len(raw) else None
            outputs[tensor.name] = tensors.decode_output(tensor, buffer, tensor.datatype)
    except ServingError as exc:
        raise ClientError(f"the server's answer cannot be read: {exc.message}") from None
    missing = [name for name in ("ids", "scores", "metadata") if name not in outputs]
    if missing:
        raise ClientError(f"the server's answer lacks the output {', '.join(missing)}")
    ids, scores, metadata = outputs["ids"], outputs["scores"], outputs["metadata"]
    if ids.ndim != 2 or len(ids) != rows or scores.shape != ids.shape \
            or metadata.shape != ids.shape:
        raise ClientError(f"the server's answer has ids {list(ids.shape)}, scores "
                          f"{list(scores.shape)} and metadata {list(metadata.shape)} for "
                          f"{rows} queries")
    matches = []
    try:
        for row in range(rows):
            matches.append([
                Match(bytes(ids[row, column]).decode(), float(scores[row, column]),
                      json.loads(metadata[row, column]))
                for column in range(ids.shape[1]) if len(ids[row, column])
            ])
    except ValueError as exc:  # not UTF-8, or not JSON
        raise ClientError(f"the server's answer cannot be read: {exc}") from None
    return matches


# Credentials


def _channel_credentials(
    tls: bool, root_certificates: PemSource, client_certificate: PemSource,
    client_key: PemSource,
) -> grpc.ChannelCredentials | None:
    if not (tls or root_certificates or client_certificate or client_key):
        return None
    if (client_certificate is None) != (client_key is None):
        raise ClientError("mutual TLS needs both client_certificate and client_key")
    try:
        return tls_credentials(root_certificates, client_certificate, client_key)
    except OSError as exc:
        raise ClientError(str(exc)) from None


def _bearer(token: str | None) -> tuple[tuple[str, str], ...] | None:
    if token is None:
        return None
    token = token.strip()
    if not token or not token.isascii() or any(c.isspace() for c in token):
        raise ClientError("the token must be one word of ASCII characters")
    return (("authorization", f"Bearer {token}"),)


# The calls, written once for both clients


@dataclass(frozen=True, slots=True)
class _Call:
    method: str  # a GRPCInferenceService method
    request: Any


Steps = Generator[_Call, Any, Any]


class _Client:
    """What the sync and async clients share: settings, the models' metadata, and every
    method as steps (see the module's note)."""

    def __init__(
        self, url: str = "localhost:8001", timeout: float = 10.0, *, tls: bool = False,
        root_certificates: PemSource = None,
        client_certificate: PemSource = None,
        client_key: PemSource = None,
        server_name: str | None = None, token: str | None = None,
    ) -> None:
        self.url = url
        self.timeout = timeout
        self._credentials = _channel_credentials(tls, root_certificates, client_certificate,
                                                 client_key)
        self._options = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                         ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]
        if server_name:
            self._options.append(("grpc.ssl_target_name_override", server_name))
        self._metadata = _bearer(token)
        self._models: dict[tuple[str, str], ModelInfo] = {}
        self._libraries: dict[tuple[str, str], _Library] = {}

    def _error(self, exc: grpc.RpcError, timeout: float) -> ClientError:
        code = exc.code()
        name = code.name if code is not None else "UNKNOWN"
        details = exc.details() or ""
        if code == grpc.StatusCode.DEADLINE_EXCEEDED and details == "Deadline Exceeded":
            return self._late(timeout)  # gRPC's own words: the client's deadline passed
        if code == grpc.StatusCode.UNAVAILABLE:
            message = f"the server at {self.url} is unavailable: {details}"
        else:
            message = details or name
        return ClientError(message, name)

    def _late(self, timeout: float) -> ClientError:
        return ClientError(f"no answer from {self.url} within the timeout of {timeout:g} s",
                           "DEADLINE_EXCEEDED")

    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def _info_steps(self, model: str, version: str) -> Steps:
        metadata = yield _Call("ModelMetadata",
                               pb.ModelMetadataRequest(name=model, version=version))
        config = yield _Call("ModelConfig", pb.ModelConfigRequest(name=model, version=version))
        info = _model_info(metadata, config)
        self._models[(model, version)] = info
        return info

    def _predict_steps(self, model: str, x: object, version: str) -> Steps:
        key = (model, version)
        info = self._models.get(key)
        if info is None:
            info = yield from self._info_steps(model, version)
        try:
            request, index = _infer_request(info, model, version, x)
            response = yield _Call("ModelInfer", request)
            return _prediction(info, response, index)
        except ClientError as error:
            if error.code is None or error.code in STALE_CODES:
                self._models.pop(key, None)
            raise

    def _search_steps(
        self, library: str, spectra: object, top_k: int, precursor_tolerance: float | None,
        min_score: float | None, version: str,
    ) -> Steps:
        queries = _search_queries(spectra)
        parameters = _search_parameters(top_k, precursor_tolerance, min_score)
        key = (library, version)
        found = self._libraries.get(key)
        try:
            if found is None:
                config = yield _Call("ModelConfig",
                                     pb.ModelConfigRequest(name=library, version=version))
                found = self._libraries[key] = _library(library, config)
            batches = found.batches(len(queries.ids))
            matches: list[list[Match]] = []
            for start, stop in batches:
                request = _search_request(library, version, queries, slice(start, stop),
                                          parameters, precursor_tolerance is not None)
                try:
                    response = yield _Call("ModelInfer", request)
                except ClientError as error:
                    if len(batches) == 1 or error.code != "INVALID_ARGUMENT":
                        raise
                    # the server counts the rows of its own request: say which they are
                    raise ClientError(f"queries {start}..{stop - 1}, sent together: {error}",
                                      error.code) from None
                matches += _search_matches(response, stop - start)
        except ClientError as error:
            if error.code is None or error.code in STALE_CODES:
                self._libraries.pop(key, None)
            raise
        return SearchResults(queries.ids, matches, dict(found.summary))

    def _models_steps(self) -> Steps:
        index = yield _Call("RepositoryIndex", pb.RepositoryIndexRequest())
        return [ModelEntry(m.name, m.version, m.state, m.reason) for m in index.models]

    def _ready_steps(self, name: str | None, version: str) -> Steps:
        if name is None:
            reply = yield _Call("ServerReady", pb.ServerReadyRequest())
        else:
            reply = yield _Call("ModelReady", pb.ModelReadyRequest(name=name, version=version))
        return reply.ready


class _Run:
    """One method call: its steps under one deadline. It hands out the RPC to send next
    with the seconds left for it (`left`) and takes back the answer or the failure; the two
    clients differ only in how they send. A step whose time ran out before it was sent
    (building a large request) fails as late without being sent."""

    def __init__(self, client: _Client, steps: Steps, timeout: float | None) -> None:
        self._client = client
        self._steps = steps
        self._timeout = client._timeout(timeout)
        self._deadline = time.monotonic() + self._timeout
        self._answer: Any = None
        self._error: ClientError | None = None
        self.left = self._timeout
        self.result: Any = None

    def next_call(self) -> _Call | None:
        """The next RPC, or None when the steps are done (`result` is then their value);
        a failure the steps do not handle is raised from here."""
        try:
            while True:
                if self._error is None:
                    call = self._steps.send(self._answer)
                else:
                    call = self._steps.throw(self._error)
                self.left = self._deadline - time.monotonic()
                if self.left > 0:
                    return call
                self._error = self._client._late(self._timeout)
        except StopIteration as done:
            self.result = done.value
            return None

    def answered(self, answer: Any) -> None:
        self._answer, self._error = answer, None

    def failed(self, exc: grpc.RpcError) -> None:
        self._error = self._client._error(exc, self._timeout)


class Client(_Client):
    """A blocking client over one gRPC channel; thread-safe. `url`: host:port of the gRPC
    port. `timeout`: seconds a call may take (each method takes its own too). TLS when `tls`
    or any certificate is given: `root_certificates` (a path or PEM bytes; None trusts the
    system's CAs), `client_certificate` and `client_key` for mutual TLS, `server_name` when
    the certificate names another host than `url`'s. `token`: sent as
    `authorization: Bearer <token>` with every call."""

    def __init__(self, url: str = "localhost:8001", timeout: float = 10.0, **settings) -> None:
        super().__init__(url, timeout, **settings)
        if self._credentials is None:
            self._channel = grpc.insecure_channel(url, options=self._options)
        else:
            self._channel = grpc.secure_channel(url, self._credentials, options=self._options)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    def _drive(self, steps: Steps, timeout: float | None) -> Any:
        """Run the steps' RPCs in turn, each within what is left of the call's timeout."""
        run = _Run(self, steps, timeout)
        while (call := run.next_call()) is not None:
            try:
                run.answered(getattr(self._stub, call.method)(
                    call.request, timeout=run.left, metadata=self._metadata))
            except grpc.RpcError as exc:
                run.failed(exc)
        return run.result

    def predict(
        self, model: str, x: object, version: str = "", timeout: float | None = None
    ) -> Prediction:
        """The model's prediction for `x`: an array or nested list (one input), a DataFrame
        (columns matched to the model's feature names), or {input name: values}."""
        return self._drive(self._predict_steps(model, x, version), timeout)

    def search(
        self, library: str, spectra: object, top_k: int = 10, *,
        precursor_tolerance: float | None = None, min_score: float | None = None,
        version: str = "", timeout: float | None = None,
    ) -> SearchResults:
        """The `top_k` entries of the spectral library `library` most like each query, best
        first. `spectra`: an MGF file's path, or an iterable of `zooserve.spectra.mgf.Spectrum` or
        of
        dicts {"mz": [...], "intensity": [...], "precursor_mz": 301.1, "id": "..."}
        ("precursor_mz" and "id" optional). With `precursor_tolerance`, only entries whose
        precursor m/z is within it of the query's qualify (a query without one is not
        windowed); with `min_score`, only entries scoring at least that. More queries than
        the library takes at once go in several requests, under the one timeout."""
        return self._drive(self._search_steps(library, spectra, top_k, precursor_tolerance,
                                              min_score, version), timeout)

    def metadata(self, name: str, version: str = "", timeout: float | None = None) -> ModelInfo:
        """The model's inputs, outputs, labels, feature names, description and versions
        (asked anew, and kept for `predict`)."""
        return self._drive(self._info_steps(name, version), timeout)

    def models(self, timeout: float | None = None) -> list[ModelEntry]:
        """The repository index: every model version with its state."""
        return self._drive(self._models_steps(), timeout)

    def ready(self, name: str | None = None, version: str = "",
              timeout: float | None = None) -> bool:
        """Whether the server (or the model `name`) is ready for inference."""
        return self._drive(self._ready_steps(name, version), timeout)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class AsyncClient(_Client):
    """`Client` over `grpc.aio`: the same settings and methods, as coroutines; make it in
    the event loop that uses it."""

    def __init__(self, url: str = "localhost:8001", timeout: float = 10.0, **settings) -> None:
        super().__init__(url, timeout, **settings)
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(url, options=self._options)
        else:
            self._channel = grpc.aio.secure_channel(url, self._credentials,
                                                    options=self._options)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    async def _drive(self, steps: Steps, timeout: float | None) -> Any:
        """Client._drive, awaiting each RPC."""
        run = _Run(self, steps, timeout)
        while (call := run.next_call()) is not None:
            try:
                run.answered(await getattr(self._stub, call.method)(
                    call.request, timeout=run.left, metadata=self._metadata))
            except grpc.RpcError as exc:
                run.failed(exc)
        return run.result

    async def predict(
        self, model: str, x: object, version: str = "", timeout: float | None = None
    ) -> Prediction:
        return await self._drive(self._predict_steps(model, x, version), timeout)

    async def search(
        self, library: str, spectra: object, top_k: int = 10, *,
        precursor_tolerance: float | None = None, min_score: float | None = None,
        version: str = "", timeout: float | None = None,
    ) -> SearchResults:
        return await self._drive(self._search_steps(library, spectra, top_k,
                                                    precursor_tolerance, min_score, version),
                                 timeout)

    async def metadata(
        self, name: str, version: str = "", timeout: float | None = None
    ) -> ModelInfo:
        return await self._drive(self._info_steps(name, version), timeout)

    async def models(self, timeout: float | None = None) -> list[ModelEntry]:
        return await self._drive(self._models_steps(), timeout)

    async def ready(self, name: str | None = None, version: str = "",
                    timeout: float | None = None) -> bool:
        return await self._drive(self._ready_steps(name, version), timeout)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.close()

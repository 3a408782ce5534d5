"""A library search's requests and answers, without I/O: what the client keeps about a
spectral library (`Library`, from its ModelConfig), query spectra (an MGF file, `Spectrum`s or
dicts of peaks) checked by the peak-list contract (zooserve.spectra.peaks) and padded into
ModelInfer requests, and the answer read back as `Match`es."""

from __future__ import annotations

import json
import numbers
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from zooserve.client.results import ClientError, Match
from zooserve.protocol import codecs
from zooserve.protocol import grpc_tensors as tensors
from zooserve.protocol.errors import ServingError
from zooserve.protocol.generated import grpc_service_pb2 as pb
from zooserve.spectra.binning import pad_peaks
from zooserve.spectra.mgf import Spectrum, read_mgf
from zooserve.spectra.peaks import SPECTRUM_FIELDS, PeakListError, parse_peak_list, read_matches

# The ModelConfig platform of a spectral library (zooserve.serving.search.model.SearchModel).
SEARCH_PLATFORM = "zooserve_spectral_search"
# The keys a query given as a dict may have.
QUERY_KEYS = SPECTRUM_FIELDS


@dataclass(frozen=True)
class Library:
    """What the client keeps about a spectral library: its summary, and how many queries
    one request may carry (0: any number)."""

    summary: dict
    max_batch_size: int

    def batches(self, count: int) -> list[tuple[int, int]]:
        """The [start, stop) ranges of `count` queries, one request each."""
        size = self.max_batch_size or count
        return [(start, min(start + size, count)) for start in range(0, count, size)]


def library_of(name: str, config: pb.ModelConfigResponse) -> Library:
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
    return Library(summary if isinstance(summary, dict) else {},
                   max(0, config.config.max_batch_size))


@dataclass(frozen=True)
class Queries:
    """Query spectra as the library takes raw peaks: zero-padded rows and their lengths."""

    ids: list[str]
    mz: np.ndarray  # float32 [queries, most peaks]
    intensity: np.ndarray  # float32, the same shape
    n_peaks: np.ndarray  # int32 [queries]
    precursor_mz: np.ndarray  # float32 [queries], NaN: none


def _named(position: int, query_id: str | None) -> str:
    default = f"query {position}"
    return default if query_id in (None, default) else f"{default} ('{query_id}')"


def _query(position: int, query: object) -> tuple[str, np.ndarray, np.ndarray, float]:
    """A query's id, m/z values, intensities and precursor m/z (NaN: none)."""
    if isinstance(query, Spectrum):
        given: object = query.id
        fields = (query.mz, query.intensity, query.precursor_mz)
    elif isinstance(query, Mapping):
        given = query.get("id")
        unknown = [repr(k) for k in query if k not in QUERY_KEYS]
        missing = [k for k in ("mz", "intensity") if k not in query]
        if unknown or missing:
            said = [f"no key {', '.join(unknown)}"] if unknown else []
            said += [f"missing {' and '.join(missing)}"] if missing else []
            raise ClientError(f"{_named(position, _shown_id(given))}: {'; '.join(said)} (a "
                              f"query's keys are {', '.join(QUERY_KEYS)})")
        fields = (query["mz"], query["intensity"], query.get("precursor_mz"))
    else:
        raise ClientError(f"query {position} ({type(query).__name__}) is neither a "
                          "zooserve.spectra.mgf.Spectrum "
                          "nor a dict with keys " + ", ".join(QUERY_KEYS))
    try:
        peaks = parse_peak_list(*fields, id=given)
    except PeakListError as exc:
        raise ClientError(exc.at(_named(position, _shown_id(given)))) from None
    query_id = f"query {position}" if peaks.id is None else str(peaks.id)
    return query_id, peaks.mz, peaks.intensity, peaks.precursor_mz


def _shown_id(given: object) -> str | None:
    """A query's id as its messages name it; one that is no id (the contract says why) is
    left out."""
    if isinstance(given, str) or isinstance(given, numbers.Integral) \
            and not isinstance(given, bool):
        return str(given)
    return None


def search_queries(spectra: object) -> Queries:
    """The queries of an MGF file's path or of an iterable of Spectrum or dicts, checked by
    the peak-list contract; how many peaks each needs is the library's to judge."""
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
    return Queries(
        ids=[query_id for query_id, _, _, _ in read], mz=mz, intensity=intensity,
        n_peaks=n_peaks, precursor_mz=np.array([p for _, _, _, p in read], dtype=np.float32),
    )


def search_parameters(
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


def search_request(
    library: str, version: str, queries: Queries, rows: slice,
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


def search_matches(response: pb.ModelInferResponse, rows: int) -> list[list[Match]]:
    """Each query's matches from a library's answer (zooserve.spectra.peaks.read_matches)."""
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
    try:
        found = read_matches(outputs["ids"], outputs["scores"], outputs["metadata"], rows)
    except ValueError as exc:  # the wrong shape, or not UTF-8, or not JSON
        raise ClientError(f"the server's answer cannot be read: {exc}") from None
    return [[Match(*match) for match in row] for row in found]

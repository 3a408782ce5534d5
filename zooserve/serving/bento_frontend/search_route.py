"""The Bento's `POST /search`: a JSON body to one call of a search model
(zooserve.serving.search.model) and back. The search itself (binning, embedding, windows,
scores) is the model's, and each spectrum is read by the peak-list contract that the client
shares (zooserve.spectra.peaks); this module only translates."""

from __future__ import annotations

import functools
import time
from typing import Annotated, Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from zooserve.protocol.errors import invalid_argument, not_found, quoted
from zooserve.protocol.limits import MAX_ID_LENGTH
from zooserve.serving.dataplane import DataPlane, InferenceRequest, InferenceResponse
from zooserve.serving.http_frontend.status import error_response
from zooserve.serving.search.model import SearchModel
from zooserve.spectra.binning import pad_peaks
from zooserve.spectra.peaks import (
    SPECTRUM_FIELDS,
    PeakList,
    PeakListError,
    kind,
    padded_width,
    parse_peak_list,
    read_matches,
)

SEARCH_EXAMPLE = {
    "spectra": [{"mz": [81.07, 109.1, 137.06, 175.12, 239.15, 301.14],
                 "intensity": [12.0, 40.0, 100.0, 8.5, 31.0, 22.0],
                 "precursor_mz": 301.14, "id": "scan-17"}],
    "top_k": 5,
}
SEARCH_FIELDS = ("spectra", "library", "top_k", "min_score", "precursor_tolerance")
# The search parameters of the core, sent as given (the model checks and names them).
SEARCH_PARAMETERS = ("top_k", "min_score", "precursor_tolerance")
# Peak lists are zero-padded to the longest one: at most this many cells per padded array
# (64 MiB of FP32), so one long spectrum among many short ones cannot make a huge batch.
MAX_PADDED_PEAKS = 1 << 24


class SearchBody(BaseModel):
    """The body of `POST /search`, for the OpenAPI page. Every field is read as it came (Any,
    unknown fields kept) and checked by `search_request`, so a mistake is a 400 naming the
    field in zooserve's words rather than pydantic's."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"example": SEARCH_EXAMPLE})

    spectra: Annotated[Any, Field(
        description='required: [{"mz": [...], "intensity": [...], "precursor_mz": 301.1, '
        '"id": "..."}], one peak list per query (precursor_mz and id optional), at most the '
        "library's maximum batch size")] = None
    library: Annotated[Any, Field(
        description="the library (search model) to search; optional when one is served")] = None
    top_k: Annotated[Any, Field(description="matches per spectrum, 1 to 100 [10]")] = None
    min_score: Annotated[Any, Field(description="leave out matches scoring below this")] = None
    precursor_tolerance: Annotated[Any, Field(
        description="m/z; given, only entries within it of each spectrum's precursor_mz "
        "match (spectra without one are not windowed)")] = None


async def search(dataplane: DataPlane, request: SearchBody) -> dict[str, Any]:
    """The route: the body checked, the library found, the spectra decoded (off the event
    loop when large) and searched; a mistake is the error body with its status."""
    # The fields sent, unknown ones too, as they came (model_dump would copy them).
    body = {key: getattr(request, key) for key in request.model_fields_set}
    library = body.get("library")
    try:
        received = time.perf_counter_ns()
        check_search_fields(body)
        model = served_library(dataplane, library)
        query_ids: list[object] = []

        def decode() -> InferenceRequest:
            inference, ids = search_request(model, body, received)
            query_ids.extend(ids)
            return inference

        answer = functools.partial(search_answer, query_ids, model.library.summary())
        size = _peak_bytes(body["spectra"], model.max_batch_size)
        return await dataplane.infer_message(model, decode, size, answer)
    except Exception as exc:
        where = "search" if library is None else f"search {quoted(library)}"
        return error_response(exc, where)  # type: ignore[return-value]


def check_search_fields(body: dict[str, Any]) -> None:
    """The body's keys: `spectra` present, nothing unknown (a misspelt `top_k` would
    otherwise be ignored without a word)."""
    unknown = [key for key in body if key not in SEARCH_FIELDS]
    if unknown:
        raise invalid_argument(
            f"{quoted(unknown[0])} is not a field of a search; its fields are: spectra "
            "(required), " + ", ".join(SEARCH_FIELDS[1:]))
    if body.get("spectra") is None:
        raise invalid_argument(
            'spectra: required: a list of {"mz": [...], "intensity": [...]} peak lists '
            '(each with an optional "precursor_mz" and "id")')


def served_library(dataplane: DataPlane, name: object) -> SearchModel:
    """The search model called `name`; None: the only library served. NOT_FOUND names the
    libraries served."""
    libraries = sorted({m.name for m in dataplane.models() if isinstance(m, SearchModel)})
    served = ", ".join(libraries) or "none"
    if name is None:
        if len(libraries) == 1:
            name = libraries[0]
        elif libraries:
            raise invalid_argument(f"library: {len(libraries)} libraries are served "
                                   f"({served}); name the one to search")
        else:
            raise not_found("no spectral library is served (a library is a version folder "
                            "holding library.json; `zooserve library build` makes one)")
    if not isinstance(name, str):
        raise invalid_argument(f"library: must be a library's name (a string); "
                               f"libraries served: {served}")
    if name in libraries:
        model = dataplane.model(name)
        if isinstance(model, SearchModel):
            return model
    if name in dataplane.names():
        raise not_found(f"library: model {quoted(name)} is not a spectral library; "
                        f"libraries served: {served}")
    why = " (it failed to load; the server log says why)" \
        if name in dataplane.failed_names() else ""
    raise not_found(f"library {quoted(name)} not found{why}; libraries served: {served}")


def search_request(
    model: SearchModel, body: dict[str, Any], received: int
) -> tuple[InferenceRequest, list[object]]:
    """The core request for the body's spectra (padded peaks, and precursors when a window is
    asked for) and its parameters, with each query's id."""
    spectra = body["spectra"]
    if not isinstance(spectra, list) or not spectra:
        raise invalid_argument("spectra: must be a non-empty list of peak lists")
    if len(spectra) > model.max_batch_size:
        raise invalid_argument(
            f"spectra: {len(spectra)} given, at most {model.max_batch_size} per request "
            f"(the maximum batch size of {quoted(model.name)}); send them in several requests")
    queries = [read_spectrum(row, spectrum) for row, spectrum in enumerate(spectra)]
    width = padded_width(queries)
    if len(queries) * width > MAX_PADDED_PEAKS:
        raise invalid_argument(
            f"spectra: {len(queries)} spectra of up to {width} peaks exceed "
            f"{MAX_PADDED_PEAKS} peaks once padded to the longest; send fewer per request")
    mz, intensity, n_peaks = pad_peaks(queries)
    inputs = {"mz": mz, "intensity": intensity, "n_peaks": n_peaks}
    parameters = {k: body[k] for k in SEARCH_PARAMETERS if body.get(k) is not None}
    if "precursor_tolerance" in parameters:
        inputs["precursor_mz"] = np.array([q.precursor_mz for q in queries], dtype=np.float32)
    request = InferenceRequest(model=model, inputs=inputs, parameters=parameters,
                               received_ns=received)
    return request, [q.id for q in queries]


def _peak_bytes(spectra: object, most: int) -> int:
    """About the bytes of FP32 peaks the body's spectra make (what DataPlane.infer_message
    weighs to decode them on or off the event loop), counted before they are checked."""
    if not isinstance(spectra, list):
        return 0
    return 8 * sum(len(s.get("mz") or ()) for s in spectra[:most + 1]
                   if isinstance(s, dict) and isinstance(s.get("mz"), list))


def read_spectrum(row: int, spectrum: object) -> PeakList:
    """One body spectrum, checked by the peak-list contract; a mistake names its path in the
    body (`spectra[3].intensity[7]`)."""
    where = f"spectra[{row}]"
    if not isinstance(spectrum, dict):
        raise invalid_argument(f'{where}: must be an object {{"mz": [...], "intensity": '
                               f'[...]}}, got {kind(spectrum)}')
    unknown = [key for key in spectrum if key not in SPECTRUM_FIELDS]
    if unknown:
        raise invalid_argument(f"{where}: {quoted(unknown[0])} is not a field of a spectrum; "
                               f"its fields are: {', '.join(SPECTRUM_FIELDS)}")
    try:
        return parse_peak_list(spectrum.get("mz"), spectrum.get("intensity"),
                               spectrum.get("precursor_mz"), spectrum.get("id"),
                               max_id_length=MAX_ID_LENGTH)
    except PeakListError as exc:
        raise invalid_argument(exc.at(where, path=True)) from None


def search_answer(
    query_ids: list[object], library: dict[str, Any], response: InferenceResponse
) -> dict[str, Any]:
    """The core's [queries, k] ids, scores and metadata as one list of matches per query,
    best first (zooserve.spectra.peaks.read_matches); columns without a match are left out."""
    outputs = response.outputs
    found = read_matches(outputs["ids"], outputs["scores"], outputs["metadata"],
                         len(query_ids))
    results = [
        {"query": row, "id": query_id,
         "matches": [{"id": entry, "score": score,
                      **{k: v for k, v in fields.items() if k not in ("id", "score")}}
                     for entry, score, fields in matches]}
        for row, (query_id, matches) in enumerate(zip(query_ids, found, strict=True))
    ]
    return {"results": results, "library": library}

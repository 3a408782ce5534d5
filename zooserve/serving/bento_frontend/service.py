"""The zooserve BentoML service: `bentoml serve zooserve.serving.bento_frontend.service:ZooServe`.

One process, one DataPlane (one repository, one ONNX Runtime session per model version, one
set of counters), three ways in:

- BentoML APIs: `POST /models` (signatures and cards), `POST /predict` (JSON tensors in and
  out, plus labels with probabilities for classifiers), `POST /search` (peak lists in, the
  best matches of a spectral library out; a JSON translation of one call to a search model,
  `zooserve.serving.search.model`); OpenAPI docs at `/`;
- the KServe v2 REST paths under `/v2`, a small Starlette app mounted next to the APIs;
- the gRPC frontend (Open Inference Protocol v2, as `zooserve serve`), started in the startup
  hook on `ZOOSERVE_GRPC_PORT` and stopped in the shutdown hook.

BentoML's `/livez`, `/readyz` (models loaded and gRPC listening) and `/metrics` (BentoML's
HTTP metrics plus the core's per-model counters, which count gRPC requests too) come with it.

Security is zooserve's (`zooserve.serving.security`, docs/security.md): with ZOOSERVE_TLS_CERT and
ZOOSERVE_TLS_KEY (and ZOOSERVE_TLS_CLIENT_CA) both HTTP (BentoML's uvicorn, through the
service's `ssl` config) and gRPC serve TLS; with a token (ZOOSERVE_AUTH_TOKEN_FILE or
ZOOSERVE_AUTH_TOKEN) every route and method but health (`/livez`, `/readyz`, `/healthz`,
`/v2/health/*`, gRPC health) needs it, `/metrics` and the docs page included. Unusable
settings, or a gRPC port that is taken, stop `bentoml serve` in its deployment hook with one
line, before any worker starts (a worker whose port is taken would otherwise be restarted
for ever, never answering HTTP).

One worker, on purpose: the gRPC server binds its port inside the worker, and the models live
in the worker's memory. A second worker would load every model again, and its gRPC server
would share the port through SO_REUSEPORT (gRPC's default), so the kernel would pin each
long-lived gRPC channel to one worker at random. Concurrency comes from the DataPlane's
inference threads (ONNX Runtime releases the GIL) and from asyncio, not from workers.

Settings are zooserve's (`ZOOSERVE_*`, read once at import): HTTP and gRPC listen on
`ZOOSERVE_HOST`, HTTP on `ZOOSERVE_HTTP_PORT` unless `bentoml serve --port` says otherwise,
gRPC on `ZOOSERVE_GRPC_PORT`. The models come from the folder
`ZOOSERVE_MODELS` or from BentoML's model store, as `ZOOSERVE_MODEL_SOURCE` says (`folder` or
`store`); left unset, a Bento serves from its own store and everything else from the folder.

Which stored models the service declares (and so which ones `bentoml build` packs) is the Bento
argument `models` (`zooserve bento build` sets it), or every zooserve model in the store. A
build that would pack no model is refused, and a server with no model to serve is never ready:
/readyz and /v2/health/ready answer 503, gRPC health says NOT_SERVING, and the log says why."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import math
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import bentoml
import numpy as np
from bentoml._internal.bento import bento as bentoml_bento
from bentoml.models import BentoModel
from grpc_health.v1 import health_pb2
from pydantic import BaseModel, ConfigDict, Field

from zooserve.protocol.errors import invalid_argument, not_found, quoted
from zooserve.protocol.limits import MAX_ID_LENGTH
from zooserve.serving import metrics
from zooserve.serving.bento_frontend import store
from zooserve.serving.dataplane import DataPlane, InferenceRequest, InferenceResponse
from zooserve.serving.grpc_frontend.server import INFERENCE_SERVICE, GrpcFrontend, start_grpc_server
from zooserve.serving.http_frontend import tensors
from zooserve.serving.http_frontend.rest import build_v2_app
from zooserve.serving.http_frontend.status import error_response
from zooserve.serving.ports import check_port_free
from zooserve.serving.search.model import SearchModel
from zooserve.serving.security import (
    BENTO_HEALTH_PATHS,
    PLAINTEXT,
    BearerTokenMiddleware,
    SecurityError,
    load_security,
)
from zooserve.serving.server import model_kinds
from zooserve.serving.settings import Settings, SettingsError
from zooserve.spectra.binning import pad_peaks

log = logging.getLogger(__name__)

SETTINGS = Settings.from_sources()
# TLS, the token and reflection; a mistake is kept and said by the deployment hook, before any
# worker starts (raising here would be a traceback at import).
try:
    SECURITY, SECURITY_PROBLEM = load_security(SETTINGS), ""
except SecurityError as exc:
    SECURITY, SECURITY_PROBLEM = PLAINTEXT, str(exc)
MODEL_SOURCES = ("folder", "store")
BENTO_HTTP_PORT = 3000  # BentoML's own default, unless ZOOSERVE_HTTP_PORT says otherwise

PENGUIN_EXAMPLE = {"features": [[39.1, 18.7, 181.0, 3750.0]]}
SEARCH_EXAMPLE = {
    "spectra": [{"mz": [81.07, 109.1, 137.06, 175.12, 239.15, 301.14],
                 "intensity": [12.0, 40.0, 100.0, 8.5, 31.0, 22.0],
                 "precursor_mz": 301.14, "id": "scan-17"}],
    "top_k": 5,
}


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


def _zoo_in_store() -> list[str]:
    try:
        return store.zoo_tags()
    except Exception as exc:  # an unreadable store must not stop a folder-backed server
        log.warning("cannot list BentoML's model store: %s", exc)
        return []


def building_a_bento() -> bool:
    """True while a Bento is being built from this module (`bentoml build`, or BentoML's
    Python build API that `zooserve bento build` calls). BentoML 1.4 has no build hook or
    flag to ask, so look for its `Bento.create` on the call stack; tests/test_bento_build.py
    fails if a BentoML upgrade moves it."""
    frame = sys._getframe(1)
    while frame is not None:
        code = frame.f_code
        if code.co_name == "create" and code.co_filename == bentoml_bento.__file__:
            return True
        frame = frame.f_back
    return False


def declared_models() -> list[str]:
    """The zoo models the service declares: those the Bento argument `models` names
    (comma-separated `name` or `name:version`), or every zooserve model in the store. A Bento
    with no model would build fine and serve nothing, so the build is refused here."""
    requested = getattr(bentoml.use_arguments(), "models", None)
    building = building_a_bento()
    if requested is None and not building:
        return _zoo_in_store()
    tags = store.select_zoo_tags(requested)
    if building and not tags:
        raise store.ZooStoreError(
            "refusing to build a Bento with no models: BentoML's model store "
            f"({store.store_location()}) holds no zooserve model; "
            "`zooserve bento build` imports the repository's models and builds the Bento "
            "(or run `zooserve bento import` before `bentoml build`)"
        )
    return tags


def model_source(running_from_bento: bool) -> str:
    source = os.environ.get("ZOOSERVE_MODEL_SOURCE", "").strip().lower()
    if not source:
        return "store" if running_from_bento else "folder"
    if source not in MODEL_SOURCES:
        raise SettingsError(
            f"ZOOSERVE_MODEL_SOURCE: must be one of {', '.join(MODEL_SOURCES)}, got '{source}'"
        )
    return source


@bentoml.asgi_app(build_v2_app(bentoml.get_current_service, SETTINGS.max_request_bytes,
                               SETTINGS.http_body_timeout, SETTINGS.http_body_buffer_bytes),
                  path="/", name="kserve-v2")
@bentoml.service(
    name="zooserve",
    workers=1,
    http={"host": SETTINGS.host, "port": BENTO_HTTP_PORT if SETTINGS.http_port is None
          else SETTINGS.http_port},
    traffic={"timeout": 60},
    ssl=SECURITY.bentoml_ssl_config(),
    labels={"project": "zooserve"},
)
class ZooServe:
    def __init__(self) -> None:
        logging.getLogger("service").setLevel(SETTINGS.log_level)
        log.info(SECURITY.describe())
        self.settings = SETTINGS
        self.grpc: GrpcFrontend | None = None
        self._links: tempfile.TemporaryDirectory | None = None
        self.source = model_source(running_from_bento=ZooServe.bento is not None)
        missing: list[str] = []
        if self.source == "store":
            self._links = tempfile.TemporaryDirectory(prefix="zooserve-store-")
            tags = self._declared_tags()
            missing = store.missing_tags(tags)
            present = [tag for tag in tags if tag not in missing]
            root = store.repository_from_store(present, Path(self._links.name))
        else:
            root = SETTINGS.models
        log.info("loading models from the %s %s", self.source, root)
        self.dataplane = DataPlane.from_settings(dataclasses.replace(SETTINGS, models=root),
                                                 model_kinds())
        self.unready_reason = self._why_never_ready(missing)
        if self.unready_reason:
            log.error("not ready: %s", self.unready_reason)

    @staticmethod
    def _declared_tags() -> list[str]:
        """A Bento serves the models it was built with (a Bento of BentoML 1.4 refers to
        models in the store rather than holding them, and the store may hold more);
        otherwise the service serves those it declared at import."""
        if ZooServe.bento is not None:
            return sorted(str(m.tag) for m in ZooServe.bento.info.all_models)
        return [str(m.tag) for m in ZooServe.models]

    def _why_never_ready(self, missing: list[str]) -> str:
        """A one-line reason why this server can never become ready, or "" if it can."""
        if missing:
            return (
                f"model {', '.join(missing)} not in BentoML's model store "
                f"({store.store_location()}); `zooserve bento import` puts the zoo there"
            )
        if self.dataplane.index():
            return ""
        if self.source == "store":
            return (
                f"no models to serve: BentoML's model store ({store.store_location()}) holds "
                "no zooserve model; `zooserve bento import` puts the zoo there"
            )
        return f"no models to serve: no <name>/<version>/model.onnx under '{SETTINGS.models}'"

    @bentoml.on_deployment
    def check_before_serving() -> None:
        """In `bentoml serve` itself, once, before any worker starts: unusable TLS or token
        settings, or a gRPC port already taken, end it here with one line. Later the worker's
        startup hook would fail instead, and BentoML would restart the worker for ever."""
        if SECURITY_PROBLEM:
            raise SystemExit(f"zooserve bento: error: {SECURITY_PROBLEM}")
        try:
            check_port_free(SETTINGS.host, SETTINGS.grpc_port, "gRPC")
        except OSError as exc:
            raise SystemExit(
                f"zooserve bento: error: {exc}; set ZOOSERVE_GRPC_PORT to a free port"
            ) from None

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        try:
            self.grpc = await start_grpc_server(
                self.dataplane, self.settings.host, self.settings.grpc_port, security=SECURITY
            )
        except OSError as exc:  # taken since the deployment hook looked: stop, not a retry loop
            log.error("%s; stopping bentoml serve (set ZOOSERVE_GRPC_PORT to a free port)", exc)
            _stop_bentoml_serve()
            raise
        if self.unready_reason:  # a gRPC probe must not see SERVING either
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            for name in ("", INFERENCE_SERVICE):
                await self.grpc.health.set(name, not_serving)

    @bentoml.on_shutdown
    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(self.settings.drain_timeout)
        await asyncio.to_thread(self.dataplane.close)
        if self._links is not None:
            self._links.cleanup()

    def ready(self) -> bool:
        return self.grpc is not None and not self.unready_reason and self.dataplane.ready()

    def __is_ready__(self) -> bool:
        """BentoML's /readyz: some model to serve, every model loaded and the gRPC server
        listening."""
        return self.ready()

    def __metrics__(self, content: str) -> str:
        """BentoML's /metrics plus the core's per-model counters (HTTP and gRPC together)."""
        return content + metrics.exposition(self.dataplane)

    @bentoml.api(route="/models")
    async def models(self) -> dict[str, Any]:
        """Every model version: its signature, labels, execution providers and card."""
        rows = []
        for row in self.dataplane.index():
            if row.state == "READY":
                model = self.dataplane.model(row.name, str(row.version))
                versions = self.dataplane.versions(row.name)
                rows.append({**tensors.describe_model(model, versions), "state": row.state})
            else:
                rows.append(
                    {
                        "name": row.name,
                        "version": str(row.version),
                        "state": row.state,
                        "reason": row.reason,
                    }
                )
        return {"models": rows}

    @bentoml.api(route="/predict")
    async def predict(
        self,
        model: Annotated[str, Field(description="model name, e.g. penguins")],
        inputs: Annotated[
            dict[str, Any] | list[Any],
            Field(
                description='{"<input name>": nested list}; a bare nested list for a '
                "one-input model; or a list of KServe v2 tensors "
                '{"name", "datatype", "shape", "data"}',
                examples=[PENGUIN_EXAMPLE],
            ),
        ],
        version: Annotated[str, Field(description="model version; empty: the highest")] = "",
        outputs: Annotated[list[str] | None, Field(description="output names; empty: all")] = None,
    ) -> dict[str, Any]:
        """Run a model. Outputs come back as tensors (nested lists with their shape and
        datatype); a classifier's answer also lists each row's labels with probabilities."""
        try:
            received = time.perf_counter_ns()
            loaded = self.dataplane.model(model, version or None)
            arrays = tensors.decode_inputs(loaded, inputs)
            _refuse_non_finite_json_numbers(inputs, arrays)
            request = InferenceRequest(
                model=loaded,
                inputs=arrays,
                requested_outputs=outputs or None,
                received_ns=received,
            )
            return await self.dataplane.infer(request, tensors.predict_response)
        except Exception as exc:
            return error_response(exc, f"predict {model}")  # type: ignore[return-value]

    @bentoml.api(route="/search")
    async def search(self, request: SearchBody, /) -> dict[str, Any]:
        """Search a spectral library with peak lists: for each spectrum its best matches
        (id, cosine score and the entry's fields), best first, and the library searched.
        `library` may be left out when one library is served; the precursor window applies
        only when `precursor_tolerance` is given."""
        # The fields sent, unknown ones too, as they came (model_dump would copy them).
        body = {key: getattr(request, key) for key in request.model_fields_set}
        library = body.get("library")
        try:
            received = time.perf_counter_ns()
            check_search_fields(body)
            model = served_library(self.dataplane, library)
            query_ids: list[object] = []

            def decode() -> InferenceRequest:  # off the event loop when large
                inference, ids = search_request(model, body, received)
                query_ids.extend(ids)
                return inference

            answer = functools.partial(search_answer, query_ids, model.library.summary())
            size = _peak_bytes(body["spectra"], model.max_batch_size)
            return await self.dataplane.infer_message(model, decode, size, answer)
        except Exception as exc:
            where = "search" if library is None else f"search {quoted(library)}"
            return error_response(exc, where)  # type: ignore[return-value]


def _refuse_non_finite_json_numbers(inputs: object, arrays: dict) -> None:
    """BentoML's JSON parser reads the literals NaN and Infinity, and numbers beyond a
    double's range (1e400) as infinite, none of which is JSON; run, they came back as 200 with
    `null`s. Refuse them, naming the input; the strings "NaN", "Infinity" and "-Infinity" are
    how a non-finite value is sent on purpose. Only arrays that hold a non-finite value are
    looked at again, so a normal request pays one isfinite per input."""
    for name, array in arrays.items():
        if array.dtype.kind != "f" or np.isfinite(array).all():
            continue
        if _holds_non_finite_number(_values_of(inputs, name)):
            raise invalid_argument(
                f"inputs: '{name}' holds a number that is not finite (NaN, Infinity, or beyond "
                'the range of a double), which JSON cannot carry; send "NaN", "Infinity" or '
                '"-Infinity" as strings if that value is meant'
            )


def _values_of(inputs: object, name: str) -> object:
    if isinstance(inputs, dict):
        return inputs.get(name, inputs)
    if isinstance(inputs, list) and inputs and all(isinstance(t, dict) for t in inputs):
        return [t.get("data") for t in inputs if t.get("name") == name]
    return inputs


def _holds_non_finite_number(values: object) -> bool:
    if isinstance(values, float):
        return not math.isfinite(values)
    if isinstance(values, list | tuple):
        return any(_holds_non_finite_number(v) for v in values)
    return False


# POST /search: JSON to one call of a search model (zooserve.serving.search.model) and back. The
# search
# itself (binning, embedding, windows, scores) is the model's; these only translate.

SEARCH_FIELDS = ("spectra", "library", "top_k", "min_score", "precursor_tolerance")
SPECTRUM_FIELDS = ("mz", "intensity", "precursor_mz", "id")
# The search parameters of the core, sent as given (the model checks and names them).
SEARCH_PARAMETERS = ("top_k", "min_score", "precursor_tolerance")
# Peak lists are zero-padded to the longest one: at most this many cells per padded array
# (64 MiB of FP32), so one long spectrum among many short ones cannot make a huge batch.
MAX_PADDED_PEAKS = 1 << 24


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
    queries = [_spectrum(row, spectrum) for row, spectrum in enumerate(spectra)]
    width = max(1, max(len(mz) for mz, _, _, _ in queries))
    if len(queries) * width > MAX_PADDED_PEAKS:
        raise invalid_argument(
            f"spectra: {len(queries)} spectra of up to {width} peaks exceed "
            f"{MAX_PADDED_PEAKS} peaks once padded to the longest; send fewer per request")
    mz, intensity, n_peaks = pad_peaks((q[0], q[1]) for q in queries)
    inputs = {"mz": mz, "intensity": intensity, "n_peaks": n_peaks}
    parameters = {k: body[k] for k in SEARCH_PARAMETERS if body.get(k) is not None}
    if "precursor_tolerance" in parameters:
        inputs["precursor_mz"] = np.array([q[2] for q in queries], dtype=np.float32)
    request = InferenceRequest(model=model, inputs=inputs, parameters=parameters,
                               received_ns=received)
    return request, [q[3] for q in queries]


def _peak_bytes(spectra: object, most: int) -> int:
    """About the bytes of FP32 peaks the body's spectra make (what DataPlane.infer_message
    weighs to decode them on or off the event loop), counted before they are checked."""
    if not isinstance(spectra, list):
        return 0
    return 8 * sum(len(s.get("mz") or ()) for s in spectra[:most + 1]
                   if isinstance(s, dict) and isinstance(s.get("mz"), list))


def _spectrum(row: int, spectrum: object) -> tuple[np.ndarray, np.ndarray, float, object]:
    """One body spectrum as (m/z, intensities, precursor m/z or NaN, id or None)."""
    where = f"spectra[{row}]"
    if not isinstance(spectrum, dict):
        raise invalid_argument(f'{where}: must be an object {{"mz": [...], "intensity": '
                               f'[...]}}, got {_json_type(spectrum)}')
    unknown = [key for key in spectrum if key not in SPECTRUM_FIELDS]
    if unknown:
        raise invalid_argument(f"{where}: {quoted(unknown[0])} is not a field of a spectrum; "
                               f"its fields are: {', '.join(SPECTRUM_FIELDS)}")
    for key in ("mz", "intensity"):
        if spectrum.get(key) is None:
            raise invalid_argument(f"{where}.{key}: required: a list of numbers")
    mz = _numbers(spectrum["mz"], f"{where}.mz")
    intensity = _numbers(spectrum["intensity"], f"{where}.intensity")
    if len(mz) != len(intensity):
        raise invalid_argument(
            f"{where}.mz and {where}.intensity differ in length ({len(mz)} m/z values, "
            f"{len(intensity)} intensities); give one intensity per m/z")
    precursor = spectrum.get("precursor_mz")
    if precursor is None:
        precursor = math.nan
    elif not _is_number(precursor) or not 0 < precursor < np.finfo(np.float32).max:
        raise invalid_argument(f"{where}.precursor_mz: {_shown(precursor)} is not a positive "
                               "m/z (leave it out, or null, for none)")
    query_id = spectrum.get("id")
    if query_id is not None and (not isinstance(query_id, str | int) or isinstance(query_id, bool)
                                 or len(str(query_id)) > MAX_ID_LENGTH):
        raise invalid_argument(f"{where}.id: must be a string or an integer of at most "
                               f"{MAX_ID_LENGTH} characters")
    return mz, intensity, float(precursor), query_id


def _numbers(values: object, where: str) -> np.ndarray:
    """A JSON list of numbers as FP32, every element a finite number FP32 can hold."""
    if not isinstance(values, list):
        raise invalid_argument(f"{where}: must be a list of numbers, got {_json_type(values)}")
    if not set(map(type, values)) <= {int, float}:  # (a loop in C) then find the culprit
        place = next(place for place, value in enumerate(values) if not _is_number(value))
        raise invalid_argument(f"{where}[{place}]: {_shown(values[place])} is not a number")
    with np.errstate(over="ignore"):
        try:
            array = np.array(values, dtype=np.float64).astype(np.float32)
        except OverflowError:  # an integer beyond a double's range
            array = np.array([float("inf") if abs(v) > 1e308 else v for v in values],
                             dtype=np.float64).astype(np.float32)
    bad = np.flatnonzero(~np.isfinite(array))
    if bad.size:
        raise invalid_argument(
            f"{where}[{bad[0]}]: {_shown(values[bad[0]])} is not a finite number an FP32 can "
            "hold (NaN, Infinity and numbers beyond about 3.4e38 are refused)")
    return array


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             type(None): "null"}
    return names.get(type(value), "a number")


def _shown(value: object, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def search_answer(
    query_ids: list[object], library: dict[str, Any], response: InferenceResponse
) -> dict[str, Any]:
    """The core's [queries, k] ids, scores and metadata as one list of matches per query,
    best first; columns without a match are left out."""
    ids, scores = response.outputs["ids"], response.outputs["scores"]
    metadata = response.outputs["metadata"]
    results = []
    for row, query_id in enumerate(query_ids):
        matches = [_match(ids[row, column], scores[row, column], metadata[row, column])
                   for column in range(ids.shape[1]) if ids[row, column]]
        results.append({"query": row, "id": query_id, "matches": matches})
    return {"results": results, "library": library}


def _match(entry_id: bytes, score: np.float32, metadata: bytes) -> dict[str, Any]:
    fields = json.loads(metadata)
    return {"id": entry_id.decode(), "score": float(score),
            **{key: value for key, value in fields.items() if key not in ("id", "score")}}


def _stop_bentoml_serve() -> None:
    """Ask the `bentoml serve` that started this worker to stop (SIGTERM to its parent, when
    that is BentoML's arbiter), so that a worker that cannot serve is not restarted for ever."""
    parent = os.getppid()
    try:
        with open(f"/proc/{parent}/cmdline", "rb") as f:
            command = f.read().replace(b"\0", b" ")
    except OSError:
        return
    if b"bentoml" in command:
        os.kill(parent, signal.SIGTERM)


# Every route and method but health needs the token when one is set; repository load/unload
# is refused without one (zooserve.serving.security).
ZooServe.add_asgi_middleware(BearerTokenMiddleware, token=SECURITY.token,
                             open_paths=BENTO_HEALTH_PATHS)


# Declare the zoo's models in the model store (the Bento's own when serving a Bento), so that
# `bentoml build` packs them into the Bento and a Bento finds them again.
ZooServe.models.extend(BentoModel(tag) for tag in declared_models())


"""The zooserve BentoML service: `bentoml serve service.bento_frontend.service:ZooServe`.

One process, one DataPlane (one repository, one ONNX Runtime session per model version, one
set of counters), three ways in:

- BentoML APIs: `POST /models` (signatures and cards), `POST /predict` (JSON tensors in and
  out, plus labels with probabilities for classifiers); OpenAPI docs at `/`;
- the KServe v2 REST paths under `/v2`, a small Starlette app mounted next to the APIs;
- the gRPC frontend (Open Inference Protocol v2, as `zooserve serve`), started in the startup
  hook on `ZOOSERVE_GRPC_PORT` and stopped in the shutdown hook.

BentoML's `/livez`, `/readyz` (models loaded and gRPC listening) and `/metrics` (BentoML's
HTTP metrics plus the core's per-model counters, which count gRPC requests too) come with it.

Security is zooserve's (`service.security`, docs/security.md): with ZOOSERVE_TLS_CERT and
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
from pydantic import Field

from service import metrics
from service.bento_frontend import store
from service.dataplane import DataPlane, InferenceRequest
from service.errors import invalid_argument
from service.grpc_frontend.server import INFERENCE_SERVICE, GrpcFrontend, start_grpc_server
from service.http_frontend import tensors
from service.http_frontend.rest import build_v2_app
from service.http_frontend.status import error_response
from service.ports import check_port_free
from service.security import (
    BENTO_HEALTH_PATHS,
    PLAINTEXT,
    BearerTokenMiddleware,
    SecurityError,
    load_security,
)
from service.settings import Settings, SettingsError

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


@bentoml.asgi_app(build_v2_app(bentoml.get_current_service, SETTINGS.max_request_bytes),
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
        self.dataplane = DataPlane.from_settings(dataclasses.replace(SETTINGS, models=root))
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
# is refused without one (service.security).
ZooServe.add_asgi_middleware(BearerTokenMiddleware, token=SECURITY.token,
                             open_paths=BENTO_HEALTH_PATHS)


# Declare the zoo's models in the model store (the Bento's own when serving a Bento), so that
# `bentoml build` packs them into the Bento and a Bento finds them again.
ZooServe.models.extend(BentoModel(tag) for tag in declared_models())


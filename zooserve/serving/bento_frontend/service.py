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

Settings are zooserve's (`ZOOSERVE_*`): HTTP and gRPC listen on
`ZOOSERVE_HOST`, HTTP on `ZOOSERVE_HTTP_PORT` unless `bentoml serve --port` says otherwise,
gRPC on `ZOOSERVE_GRPC_PORT`. The models come from the folder
`ZOOSERVE_MODELS` or from BentoML's model store, as `ZOOSERVE_MODEL_SOURCE` says (`folder` or
`store`); left unset, a Bento serves from its own store and everything else from the folder.

Which stored models the service declares (and so which ones `bentoml build` packs) is the Bento
argument `models` (`zooserve bento build` sets it), or every zooserve model in the store. A
build that would pack no model is refused, and a server with no model to serve is never ready:
/readyz and /v2/health/ready answer 503, gRPC health says NOT_SERVING, and the log says why.

Importing this module does what BentoML needs of it and no more (`startup`'s note): the class
with its config, the mounted REST app and the declared models. The work is in the hooks and
the routes' modules: `startup` (settings, security, models, the gRPC server), `routes`
(/models, /predict) and `search_route` (/search)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated, Any

import bentoml
from bentoml.models import BentoModel
from pydantic import Field

from zooserve.serving import metrics
from zooserve.serving.bento_frontend import routes, search_route, startup
from zooserve.serving.bento_frontend.search_route import SearchBody
from zooserve.serving.http_frontend.rest import build_v2_app

log = logging.getLogger(__name__)

_SETTINGS = startup.settings()  # what the class decorator and the REST app are made with


@bentoml.asgi_app(build_v2_app(bentoml.get_current_service, _SETTINGS.max_request_bytes,
                               _SETTINGS.http_body_timeout, _SETTINGS.http_body_buffer_bytes),
                  path="/", name="kserve-v2")
@bentoml.service(
    name="zooserve",
    workers=1,
    http=startup.http_config(),
    traffic={"timeout": 60},
    ssl=startup.ssl_config(),
    labels={"project": "zooserve"},
)
class ZooServe:
    def __init__(self) -> None:
        logging.getLogger("zooserve").setLevel(_SETTINGS.log_level)
        log.info(startup.security().describe())
        self.settings = _SETTINGS
        self.grpc = None  # the gRPC frontend, once the startup hook has started it
        source = startup.model_source(running_from_bento=ZooServe.bento is not None)
        tags = self._declared_tags() if source == "store" else []
        self._models = startup.Models(source, tags)
        self.source = source
        self.dataplane = self._models.dataplane
        self.unready_reason = self._models.unready_reason

    @staticmethod
    def _declared_tags() -> list[str]:
        """A Bento serves the models it was built with (a Bento of BentoML 1.4 refers to
        models in the store rather than holding them, and the store may hold more);
        otherwise the service serves those it declared at import."""
        if ZooServe.bento is not None:
            return sorted(str(m.tag) for m in ZooServe.bento.info.all_models)
        return [str(m.tag) for m in ZooServe.models]

    @bentoml.on_deployment
    def check_before_serving() -> None:
        """In `bentoml serve` itself, before any worker starts (startup.check_before_serving)."""
        startup.check_before_serving()

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        self.grpc = await startup.start_grpc(self.dataplane, ready=not self.unready_reason)

    @bentoml.on_shutdown
    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop(self.settings.drain_timeout)
        await asyncio.to_thread(self._models.close)

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
        return routes.models(self.dataplane)

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
                examples=[routes.PENGUIN_EXAMPLE],
            ),
        ],
        version: Annotated[str, Field(description="model version; empty: the highest")] = "",
        outputs: Annotated[list[str] | None, Field(description="output names; empty: all")] = None,
    ) -> dict[str, Any]:
        """Run a model. Outputs come back as tensors (nested lists with their shape and
        datatype); a classifier's answer also lists each row's labels with probabilities."""
        return await routes.predict(self.dataplane, model, inputs, version, outputs)

    @bentoml.api(route="/search")
    async def search(self, request: SearchBody, /) -> dict[str, Any]:
        """Search a spectral library with peak lists: for each spectrum its best matches
        (id, cosine score and the entry's fields), best first, and the library searched.
        `library` may be left out when one library is served; the precursor window applies
        only when `precursor_tolerance` is given."""
        return await search_route.search(self.dataplane, request)


# Every route and method but health needs the token when one is set; repository load/unload
# is refused without one (zooserve.serving.security). The token is read in the worker.
ZooServe.add_asgi_middleware(startup.TokenGate)

# Declare the zoo's models in the model store (the Bento's own when serving a Bento), so that
# `bentoml build` packs them into the Bento and a Bento finds them again.
ZooServe.models.extend(BentoModel(tag) for tag in startup.declared_models())

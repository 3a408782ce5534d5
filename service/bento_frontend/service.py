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

One worker, on purpose: the gRPC server binds its port inside the worker, and the models live
in the worker's memory. A second worker would load every model again, and its gRPC server
would share the port through SO_REUSEPORT (gRPC's default), so the kernel would pin each
long-lived gRPC channel to one worker at random. Concurrency comes from the DataPlane's
inference threads (ONNX Runtime releases the GIL) and from asyncio, not from workers.

Settings are zooserve's (`ZOOSERVE_*`, read once at import): HTTP and gRPC listen on
`ZOOSERVE_HOST`, HTTP on `ZOOSERVE_HTTP_PORT` unless `bentoml serve --port` says otherwise,
gRPC on `ZOOSERVE_GRPC_PORT`. The models come from the folder
`ZOOSERVE_MODELS` or from BentoML's model store, as `ZOOSERVE_MODEL_SOURCE` says (`folder` or
`store`); left unset, a Bento serves from its own store and everything else from the folder."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any

import bentoml
from bentoml.models import BentoModel
from pydantic import Field

from service import metrics
from service.bento_frontend import store, tensors
from service.bento_frontend.rest import build_v2_app
from service.bento_frontend.status import error_response
from service.dataplane import DataPlane, InferenceRequest
from service.grpc_frontend.server import GrpcFrontend, start_grpc_server
from service.settings import Settings, SettingsError

log = logging.getLogger(__name__)

SETTINGS = Settings.from_sources()
MODEL_SOURCES = ("folder", "store")

PENGUIN_EXAMPLE = {"features": [[39.1, 18.7, 181.0, 3750.0]]}


def _zoo_in_store() -> list[str]:
    try:
        return store.zoo_tags()
    except Exception as exc:  # an unreadable store must not stop a folder-backed server
        log.warning("cannot list BentoML's model store: %s", exc)
        return []


def model_source(running_from_bento: bool) -> str:
    source = os.environ.get("ZOOSERVE_MODEL_SOURCE", "").strip().lower()
    if not source:
        return "store" if running_from_bento else "folder"
    if source not in MODEL_SOURCES:
        raise SettingsError(
            f"ZOOSERVE_MODEL_SOURCE: must be one of {', '.join(MODEL_SOURCES)}, got '{source}'"
        )
    return source


@bentoml.asgi_app(build_v2_app(bentoml.get_current_service), path="/", name="kserve-v2")
@bentoml.service(
    name="zooserve",
    workers=1,
    http={"host": SETTINGS.host, "port": SETTINGS.http_port},
    traffic={"timeout": 60},
    labels={"project": "zooserve"},
)
class ZooServe:
    def __init__(self) -> None:
        logging.getLogger("service").setLevel(SETTINGS.log_level)
        self.settings = SETTINGS
        self.grpc: GrpcFrontend | None = None
        self._links: tempfile.TemporaryDirectory | None = None
        self.source = model_source(running_from_bento=ZooServe.bento is not None)
        if self.source == "store":
            self._links = tempfile.TemporaryDirectory(prefix="zooserve-store-")
            tags = [str(m.tag) for m in ZooServe.models]
            root = store.repository_from_store(tags, Path(self._links.name))
        else:
            root = SETTINGS.models
        log.info("loading models from the %s %s", self.source, root)
        self.dataplane = DataPlane.from_settings(dataclasses.replace(SETTINGS, models=root))

    @bentoml.on_startup
    async def start_grpc(self) -> None:
        self.grpc = await start_grpc_server(
            self.dataplane, self.settings.host, self.settings.grpc_port
        )

    @bentoml.on_shutdown
    async def stop(self) -> None:
        if self.grpc is not None:
            await self.grpc.stop()
        await asyncio.to_thread(self.dataplane.close)
        if self._links is not None:
            self._links.cleanup()

    def ready(self) -> bool:
        return self.grpc is not None and self.dataplane.ready()

    def __is_ready__(self) -> bool:
        """BentoML's /readyz: every model loaded and the gRPC server listening."""
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
            loaded = self.dataplane.model(model, version or None)
            request = InferenceRequest(
                model=loaded,
                inputs=tensors.decode_inputs(loaded, inputs),
                requested_outputs=outputs or None,
            )
            response = await self.dataplane.infer(request)
        except Exception as exc:
            return error_response(exc, f"predict {model}")  # type: ignore[return-value]
        return tensors.predict_response(response)


# Declare the zoo's models in the model store (the Bento's own when serving a Bento), so that
# `bentoml build` packs them into the Bento and a Bento finds them again.
ZooServe.models.extend(BentoModel(tag) for tag in _zoo_in_store())


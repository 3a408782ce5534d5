"""The KServe v2 REST paths (Open Inference Protocol over HTTP/JSON) as a small Starlette app:
`zooserve serve` runs it on its HTTP port (`server.py`) and the BentoML service mounts it next
to its own APIs. Each handler converts, delegates to the
DataPlane, converts back; errors go through the one HTTP table in `status.py`."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.dataplane import DataPlane
from service.errors import invalid_argument, unavailable
from service.http_frontend import tensors
from service.http_frontend.status import error_response

# The Triton extensions the gRPC frontend implements; over HTTP only the core verbs exist.
EXTENSIONS: list[str] = []


class Frontend(Protocol):
    """What the handlers need from the running service."""

    dataplane: DataPlane

    def ready(self) -> bool: ...


Handler = Callable[[Request, Frontend], Awaitable[Response]]


def build_v2_app(current: Callable[[], Frontend | None]) -> Starlette:
    """The app; `current()` returns the running service (None before it has started)."""

    def route(path: str, methods: list[str]):
        def register(handler: Handler) -> Handler:
            @functools.wraps(handler)
            async def endpoint(request: Request) -> Response:
                try:
                    frontend = current()
                    if frontend is None:
                        raise unavailable("the server is starting")
                    return await handler(request, frontend)
                except Exception as exc:
                    return error_response(exc, f"{request.method} {path}")

            routes.append(Route(path, endpoint, methods=methods))
            return handler

        return register

    routes: list[Route] = []

    @route("/v2", ["GET"])
    async def server_metadata(request: Request, frontend: Frontend) -> Response:
        dataplane = frontend.dataplane
        return JSONResponse(
            {
                "name": dataplane.server_name,
                "version": dataplane.server_version,
                "extensions": EXTENSIONS,
            }
        )

    @route("/v2/health/live", ["GET"])
    async def live(request: Request, frontend: Frontend) -> Response:
        alive = frontend.dataplane.live()
        return JSONResponse({"live": alive}, status_code=200 if alive else 503)

    @route("/v2/health/ready", ["GET"])
    async def ready(request: Request, frontend: Frontend) -> Response:
        is_ready = frontend.ready()
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    @route("/v2/models/{name}", ["GET"])
    @route("/v2/models/{name}/versions/{version}", ["GET"])
    async def model_metadata(request: Request, frontend: Frontend) -> Response:
        name, version = _model_path(request)
        model = frontend.dataplane.model(name, version)
        versions = frontend.dataplane.versions(model.name)
        return JSONResponse(tensors.v2_model_metadata(model, versions))

    @route("/v2/models/{name}/ready", ["GET"])
    @route("/v2/models/{name}/versions/{version}/ready", ["GET"])
    async def model_ready(request: Request, frontend: Frontend) -> Response:
        name, version = _model_path(request)
        frontend.dataplane.model(name, version)  # NOT_FOUND for an unknown model
        is_ready = frontend.dataplane.model_ready(name, version)
        return JSONResponse({"name": name, "ready": is_ready}, status_code=200 if is_ready else 503)

    @route("/v2/models/{name}/infer", ["POST"])
    @route("/v2/models/{name}/versions/{version}/infer", ["POST"])
    async def infer(request: Request, frontend: Frontend) -> Response:
        name, version = _model_path(request)
        if "inference-header-content-length" in request.headers:
            raise invalid_argument(
                "the binary tensor data extension is not supported over HTTP; send JSON "
                "tensors, or use gRPC for raw tensors"
            )
        received = time.perf_counter_ns()
        model = frontend.dataplane.model(name, version)  # NOT_FOUND first, as over gRPC
        body = await _json_body(request)
        return await frontend.dataplane.infer(
            tensors.v2_inference_request(model, body, received),
            lambda response: JSONResponse(tensors.v2_infer_response(response)),
        )

    return Starlette(routes=routes)


def _model_path(request: Request) -> tuple[str, str | None]:
    return request.path_params["name"], request.path_params.get("version")


async def _json_body(request: Request) -> object:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise invalid_argument(f"the request body is not JSON: {exc}") from None

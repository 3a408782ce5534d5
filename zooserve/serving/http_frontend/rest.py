"""The KServe v2 REST paths (Open Inference Protocol over HTTP/JSON) as a small Starlette app:
`zooserve serve` runs it on its HTTP port (`server.py`) and the BentoML service mounts it next
to its own APIs. Each handler converts, delegates to the
DataPlane, converts back; errors go through the one HTTP table in `status.py`."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from zooserve.protocol.errors import invalid_argument, quoted, unavailable
from zooserve.serving import model_config as configuration
from zooserve.serving.dataplane import DataPlane, InferenceRequest
from zooserve.serving.http_frontend import binary, body, extensions, tensors
from zooserve.serving.http_frontend.status import HttpError, error_response
from zooserve.serving.settings import Settings

# The Triton extensions the HTTP side implements (ServerMetadata's `extensions`).
EXTENSIONS: list[str] = ["binary_tensor_data", "model_configuration", "statistics"]
DEFAULT_MAX_REQUEST_BYTES = Settings.max_request_bytes


class Frontend(Protocol):
    """What the handlers need from the running service."""

    dataplane: DataPlane

    def ready(self) -> bool: ...


Handler = Callable[[Request, Frontend], Awaitable[Response]]


def build_v2_app(
    current: Callable[[], Frontend | None], max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    body_timeout: float = Settings.http_body_timeout,
    body_buffer_bytes: int = Settings.http_body_buffer_bytes,
) -> Starlette:
    """The app; `current()` returns the running service (None before it has started).
    Request bodies are held to the settings of these names (zooserve/serving/http_frontend/body.py):
    413 beyond `max_request_bytes`, 408 when one stalls for `body_timeout` seconds, 503 when
    holding it would pass `body_buffer_bytes` of bodies held at once."""
    budget = body.BodyBudget(body_buffer_bytes)

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

    # Before /v2/models/{name}, which would read "stats" as a model's name.
    @route("/v2/models/stats", ["GET"])
    @route("/v2/models/{name}/stats", ["GET"])
    @route("/v2/models/{name}/versions/{version}/stats", ["GET"])
    async def model_statistics(request: Request, frontend: Frontend) -> Response:
        name = request.path_params.get("name", "")
        version = request.path_params.get("version", "")
        rows = frontend.dataplane.statistics(name, version)
        return JSONResponse(extensions.model_statistics(rows))

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
        """JSON tensors, or Triton's binary tensor data extension (zooserve/serving/http_frontend/
        binary.py) both ways; a gzip or deflate body; a gzip or deflate answer when the
        client accepts one."""
        name, version = _model_path(request)
        # The model, the server's and the model's limits of requests in flight, then the
        # budget of body bytes: all before a byte of the body is read, so a refused request
        # costs no memory. The admission holds the version in service while its body
        # arrives (a version is released only once none of its requests is in flight).
        dataplane = frontend.dataplane
        model = dataplane.model(name, version)
        encoding = request.headers.get("content-encoding", "")
        header = request.headers.get(binary.HEADER)
        with dataplane.admission(model) as admitted, budget.hold() as hold:
            received = time.perf_counter_ns()
            raw = await body.read_body(request, max_request_bytes, hold)
            choices: list[binary.OutputChoice] = []

            def decode() -> InferenceRequest:
                inference, choice = binary.inference_request(
                    model, body.decompress(raw, encoding, max_request_bytes), header, received
                )
                choices.append(choice)
                return inference

            # A large body is decompressed and decoded off the event loop
            # (DataPlane.infer_admitted); a compressed one always, since its size says little
            # about what it inflates to.
            size = len(raw) if body.identity(encoding) else max_request_bytes
            response = await dataplane.infer_admitted(
                admitted, decode, size, lambda answer: binary.infer_response(answer, choices[0])
            )
        return _compressed(response, request.headers.get("accept-encoding", ""))

    @route("/v2/models/{name}/config", ["GET"])
    @route("/v2/models/{name}/versions/{version}/config", ["GET"])
    async def model_config(request: Request, frontend: Frontend) -> Response:
        name, version = _model_path(request)
        return JSONResponse(configuration.model_config(frontend.dataplane.model(name, version)))

    async def json_object(request: Request, what: str, example: str) -> dict:
        """A small request body of options: a JSON object, {} when the body is empty."""
        with budget.hold() as hold:
            raw = await body.read_body(request, max_request_bytes, hold)
        raw = body.decompress(raw, request.headers.get("content-encoding", ""),
                              max_request_bytes)
        options = body.read_json(raw, what) if raw.strip() else {}
        if not isinstance(options, dict):
            raise invalid_argument(f"{what} must be a JSON object, e.g. {example}")
        return options

    @route("/v2/repository/index", ["POST"])
    async def repository_index(request: Request, frontend: Frontend) -> Response:
        """Every model version found, `{"ready": true}` for the ready ones only; an empty
        body (as tritonclient sends) asks for all."""
        options = await json_object(request, "the request body", '{"ready": true}')
        ready = options.get("ready", False)
        if not isinstance(ready, bool):
            raise invalid_argument('"ready" must be true or false')
        rows = frontend.dataplane.index()
        return JSONResponse(extensions.repository_index(rows, ready_only=ready))

    # Triton's model-repository extension, with --model-control explicit (model_control.py).
    # A load body is empty or a JSON object whose only key is "parameters" (an object); the
    # core refuses every parameter by name (400), never ignores one. 200 with an empty
    # body, as Triton.
    @route("/v2/repository/models/{name}/load", ["POST"])
    async def load_model(request: Request, frontend: Frontend) -> Response:
        options = await json_object(request, "the load request body",
                                    '{"parameters": {}}, or empty')
        unknown = [key for key in options if key != "parameters"]
        if unknown:
            raise invalid_argument(f"the load request body has {quoted(unknown[0])}; its only "
                                   'key is "parameters"')
        parameters = options.get("parameters", {})
        if not isinstance(parameters, dict):
            raise invalid_argument('"parameters" of a load request must be a JSON object')
        await frontend.dataplane.load_model(request.path_params["name"], parameters)
        return Response(status_code=200)

    @route("/v2/repository/models/{name}/unload", ["POST"])
    async def unload_model(request: Request, frontend: Frontend) -> Response:
        await frontend.dataplane.unload_model(request.path_params["name"])
        return Response(status_code=200)

    return Starlette(
        routes=routes,
        middleware=[Middleware(body.BodyGuard, max_bytes=max_request_bytes,
                               body_timeout=body_timeout)],
        exception_handlers={HTTPException: _no_route, HttpError: _refused},
    )


async def _no_route(request: Request, exc: Exception) -> Response:
    """A path the app does not answer (404) or a method its path does not take (405), as
    JSON like every other error, never Starlette's plain text."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        message = f"{quoted(request.method)} is not allowed on {quoted(request.url.path)}"
        allowed = (exc.headers or {}).get("Allow")
        if allowed:
            message += f"; use {allowed}"
    elif exc.status_code == 404:
        message = f"no such path: {quoted(request.url.path)}"
    else:
        message = exc.detail
    return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)


async def _refused(request: Request, exc: Exception) -> Response:
    """An HttpError a handler did not answer itself (a body over the limit while a route
    that reads none was running)."""
    return error_response(exc, f"{request.method} {quoted(request.url.path)}")


def _compressed(response: Response, accept_encoding: str) -> Response:
    """The response compressed with gzip or deflate when the client accepts one and it is
    worth it."""
    coding = body.accepted_encoding(accept_encoding) if accept_encoding else None
    if coding is None or len(response.body) < body.COMPRESS_AT_LEAST:
        return response
    packed = body.compress(bytes(response.body), coding)
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    headers["Content-Encoding"] = coding
    headers["Vary"] = "Accept-Encoding"
    return Response(packed, status_code=response.status_code, headers=headers)


def _model_path(request: Request) -> tuple[str, str | None]:
    return request.path_params["name"], request.path_params.get("version")



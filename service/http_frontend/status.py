"""The one translation from exceptions to HTTP answers (gRPC's is
service/grpc_frontend/status.py). A client's mistake is 4xx, never 500."""

from __future__ import annotations

from starlette.responses import JSONResponse

from service.errors import ErrorKind, as_serving_error

HTTP_STATUS_BY_KIND: dict[ErrorKind, int] = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.RESOURCE_EXHAUSTED: 429,
    ErrorKind.DEADLINE_EXCEEDED: 504,
    ErrorKind.INTERNAL: 500,
}


def error_response(exc: BaseException, where: str) -> JSONResponse:
    """The JSON error body `{"error": message}` with the status code for this exception."""
    error = as_serving_error(exc, where)
    return JSONResponse({"error": error.message}, status_code=HTTP_STATUS_BY_KIND[error.kind])

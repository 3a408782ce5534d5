"""The one translation from exceptions to HTTP answers (gRPC's is
zooserve/serving/grpc_frontend/status.py). A client's mistake is 4xx, never 500."""

from __future__ import annotations

import logging

from starlette.responses import JSONResponse

from zooserve.protocol.errors import ErrorKind, as_serving_error, one_log_line

log = logging.getLogger(__name__)

HTTP_STATUS_BY_KIND: dict[ErrorKind, int] = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.RESOURCE_EXHAUSTED: 429,
    ErrorKind.DEADLINE_EXCEEDED: 504,
    ErrorKind.INTERNAL: 500,
}


class HttpError(Exception):
    """A refusal that only HTTP has a status for (413 for a body over the size limit, 415 for
    an unknown Content-Encoding, 404/405 for a path or method the app does not answer),
    with any headers the answer needs."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def error_response(exc: BaseException, where: str) -> JSONResponse:
    """The JSON error body `{"error": message}` with the status code for this exception."""
    if isinstance(exc, HttpError):
        log.info("%s: HTTP %d: %s", where, exc.status, one_log_line(exc.message))
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)
    error = as_serving_error(exc, where)
    return JSONResponse({"error": error.message}, status_code=HTTP_STATUS_BY_KIND[error.kind])

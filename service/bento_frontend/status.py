"""The one table from the core's error kinds to HTTP status codes (gRPC's is
service/grpc_frontend/status.py). A client's mistake is 4xx, never 500."""

from __future__ import annotations

from service.errors import ErrorKind

HTTP_STATUS_BY_KIND: dict[ErrorKind, int] = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.INTERNAL: 500,
}

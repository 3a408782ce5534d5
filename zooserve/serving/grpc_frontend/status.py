"""The one translation from exceptions to gRPC status codes."""

from __future__ import annotations

import grpc

from zooserve.protocol.errors import ErrorKind, as_serving_error

STATUS_BY_KIND: dict[ErrorKind, grpc.StatusCode] = {
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.RESOURCE_EXHAUSTED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}


def grpc_status(exc: BaseException, where: str) -> tuple[grpc.StatusCode, str]:
    """The status code and message a gRPC client gets for this exception."""
    error = as_serving_error(exc, where)
    return STATUS_BY_KIND[error.kind], error.message

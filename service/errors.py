"""The errors the core raises. Each carries a kind; every frontend maps kinds to its own
status codes in one table (gRPC: service/grpc_frontend/status.py), so a client's mistake
always reaches the client as the same kind of answer, whatever the protocol."""

from __future__ import annotations

import enum


class ErrorKind(enum.Enum):
    NOT_FOUND = "not found"  # no such model or version
    INVALID_ARGUMENT = "invalid argument"  # the request does not fit the model
    UNAVAILABLE = "unavailable"  # the server cannot answer now (not ready, shutting down)
    INTERNAL = "internal"  # our fault, never the client's


class ServingError(Exception):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"ServingError({self.kind.name}, {self.message!r})"


def not_found(message: str) -> ServingError:
    return ServingError(ErrorKind.NOT_FOUND, message)


def invalid_argument(message: str) -> ServingError:
    return ServingError(ErrorKind.INVALID_ARGUMENT, message)


def unavailable(message: str) -> ServingError:
    return ServingError(ErrorKind.UNAVAILABLE, message)

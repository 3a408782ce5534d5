"""The errors the core raises. Each carries a kind; every frontend maps kinds to its own
status codes in one table (gRPC: zooserve/serving/grpc_frontend/status.py, HTTP:
zooserve/serving/http_frontend/status.py), so a client's mistake always reaches the client as the
same kind of answer, whatever the protocol. `as_serving_error` is the one place any other
exception becomes an answer."""

from __future__ import annotations

import enum
import logging
import re

from zooserve.protocol.limits import MAX_ECHO

log = logging.getLogger(__name__)

# What a client is told about our own bug; the details go to the server log only.
INTERNAL_MESSAGE = "internal error; the server log has it"


class ErrorKind(enum.Enum):
    NOT_FOUND = "not found"  # no such model or version
    INVALID_ARGUMENT = "invalid argument"  # the request does not fit the model
    UNAVAILABLE = "unavailable"  # the server cannot answer now (not ready, shutting down)
    RESOURCE_EXHAUSTED = "resource exhausted"  # the model's queue is full: retry later
    DEADLINE_EXCEEDED = "deadline exceeded"  # the client's deadline passed before the run
    INTERNAL = "internal"  # our fault, never the client's


class ServingError(Exception):
    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __repr__(self) -> str:
        return f"ServingError({self.kind.name}, {self.message!r})"


def quoted(text: object, limit: int = MAX_ECHO) -> str:
    """A client-supplied string as an error message or a log line may show it: its repr (so a
    newline or an escape sequence cannot forge a log line or break a message), cut to `limit`
    characters with the full length said. Every name, version or id a client sent is shown
    through this."""
    text = text if isinstance(text, str) else str(text)
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text)} characters)"


# C0 and C1 control characters and the Unicode line separators: what a log line must not hold.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_log_line(text: str) -> str:
    """Text with its control characters escaped, so it stays one line in the log."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


def one_line(text: object, limit: int = 300) -> str:
    """A reason (an exception, ONNX Runtime's multi-line errors) folded onto one line and cut
    to `limit` characters, for a log line, a startup error or an index row."""
    folded = " ".join(str(text).split())
    return folded if len(folded) <= limit else folded[:limit] + "..."


def not_found(message: str) -> ServingError:
    return ServingError(ErrorKind.NOT_FOUND, message)


def invalid_argument(message: str) -> ServingError:
    return ServingError(ErrorKind.INVALID_ARGUMENT, message)


def unavailable(message: str) -> ServingError:
    return ServingError(ErrorKind.UNAVAILABLE, message)


def resource_exhausted(message: str) -> ServingError:
    return ServingError(ErrorKind.RESOURCE_EXHAUSTED, message)


def deadline_exceeded(message: str) -> ServingError:
    return ServingError(ErrorKind.DEADLINE_EXCEEDED, message)


def as_serving_error(exc: BaseException, where: str) -> ServingError:
    """The error a client is told about, logged once: a ServingError as it is; anything
    else is our bug, logged with its traceback and answered INTERNAL without details."""
    if isinstance(exc, ServingError):
        log.info("%s: %s: %s", where, exc.kind.name, one_log_line(exc.message))
        return exc
    log.error("%s failed", where, exc_info=exc)
    return ServingError(ErrorKind.INTERNAL, INTERNAL_MESSAGE)

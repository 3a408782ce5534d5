"""HTTP/1.1 connections held to limits a hostile client cannot stretch.

uvicorn's h11 protocol, with what it leaves open closed:

- **time**: a connection with no request in progress is closed after the idle timeout
  (uvicorn arms its keep-alive timer only after a first response); a request head must be
  complete within the header timeout of its first byte, else 408 (slowloris). The body
  timeout is kept by `body.BodyGuard`, where the app waits for the body.
- **count**: a connection beyond the cap is answered 503 and closed at once.
- **framing** (RFC 9112): before h11 parses a head, the raw head is checked for what h11
  tolerates and a proxy in front might read differently: both Transfer-Encoding and
  Content-Length, either of them twice or as a list, obs-fold continuation lines, and a version
  other than HTTP/1.0 or 1.1. Each is answered 400 (505 for the version) and the connection is
  closed, so nothing smuggled after it is ever answered.

Every refusal here is a JSON `{"error": ...}` like the app's own, sent with Connection: close.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from http import HTTPStatus

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

# The blank line that ends a head (h11 accepts bare LF line ends too).
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_VERSION = re.compile(rb"HTTP/([0-9]+)\.([0-9]+)")
_SPOKEN = {b"HTTP/1.0", b"HTTP/1.1"}


@dataclass(frozen=True)
class ConnectionLimits:
    """The settings of the same names (zooserve/serving/settings.py), in seconds and connections."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0
    idle_timeout: float = 75.0
    max_connections: int = 1000


def framing_problem(head: bytes) -> tuple[int, str] | None:
    """(status, reason) when a raw request head (request line and header lines, without the
    blank line) is framed in a way this server refuses; None when h11 may parse it."""
    lines = head.split(b"\n")
    request_line = lines[0].rstrip(b"\r")
    version = request_line.rsplit(b" ", 1)[-1]
    if _VERSION.fullmatch(version) and version not in _SPOKEN:
        shown = version.decode("ascii")
        return 505, f"{shown} is not spoken on this port; send HTTP/1.1 (or HTTP/1.0)"
    counts = {b"content-length": 0, b"transfer-encoding": 0}
    for line in lines[1:]:
        if line[:1] in (b" ", b"\t"):
            return 400, ("a header line begins with whitespace (obsolete line folding); "
                         "send each header on one line")
        name, colon, value = line.partition(b":")
        key = name.strip().lower()
        if colon and key in counts:
            counts[key] += 1
            if key == b"content-length" and b"," in value:
                return 400, "Content-Length must be one number, not a list"
    if counts[b"content-length"] > 1:
        return 400, "the request has more than one Content-Length header"
    if counts[b"transfer-encoding"] > 1:
        return 400, "the request has more than one Transfer-Encoding header"
    if counts[b"content-length"] and counts[b"transfer-encoding"]:
        return 400, ("the request has both Transfer-Encoding and Content-Length; send one "
                     "(RFC 9112, section 6.3)")
    return None


def refusal(status: int, message: str) -> bytes:
    """A whole HTTP/1.1 response that refuses a request and says the connection closes."""
    body = json.dumps({"error": message}).encode()
    phrase = HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode("ascii") + body


class GuardedH11Protocol(H11Protocol):
    """uvicorn's H11Protocol with the limits of `limits` (a subclass per server sets it)."""

    limits = ConnectionLimits()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = None
        if len(self.connections) > self.limits.max_connections:
            self._refuse(503, f"the server has {self.limits.max_connections} HTTP connections "
                         "open, its limit (--http-max-connections / "
                         "ZOOSERVE_HTTP_MAX_CONNECTIONS): retry later or at another replica")
            return
        # Idle from the start, not only after a first response as uvicorn has it.
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
            pending, _ = self.conn.trailing_data  # a head arriving, not yet parsed
            if pending:
                end = _HEAD_END.search(pending)
                if end is None:
                    self._start_head_timer()
                else:
                    problem = framing_problem(pending[:end.start()])
                    if problem is not None:
                        self._refuse(*problem)
                        return
        super().handle_events()
        if self.conn.their_state is not h11.IDLE:
            self._cancel_head_timer()

    def send_400_response(self, msg: str) -> None:
        """h11 could not parse the request (uvicorn answers that in plain text): JSON."""
        self._refuse(400, "the request is not valid HTTP/1.1 (its request line, a header, "
                     "its length or its chunked framing)")

    def _start_head_timer(self) -> None:
        if self._head_timer is None and not self.transport.is_closing():
            self._head_timer = self.loop.call_later(
                self.limits.header_timeout, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        timer, self._head_timer = getattr(self, "_head_timer", None), None
        if timer is not None:
            timer.cancel()

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._refuse(408, f"the request head did not arrive within "
                         f"{self.limits.header_timeout:g} s of its first byte "
                         "(--http-header-timeout / ZOOSERVE_HTTP_HEADER_TIMEOUT)")

    def _refuse(self, status: int, message: str) -> None:
        """Answer before h11 has a request (so h11 is not told) and close."""
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        log.info("HTTP %d to %s: %s", status, _peer(self.client), message)
        if not self.transport.is_closing():
            self.transport.write(refusal(status, message))
            self.transport.close()


def _peer(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "a client"


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedH11Protocol]:
    """The protocol class for one server's uvicorn.Config(http=...)."""
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})

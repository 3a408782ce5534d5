"""HTTP/1.1 over a plain socket, for tests that must send what HTTP clients refuse to send
(two Content-Lengths, folded headers, a head one byte at a time) and must see exactly what
came back: one response parsed by hand, and whether the server closed the connection."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

CRLF = b"\r\n"


class NoAnswer(AssertionError):
    """What was expected from the server did not come by the deadline."""


def address(base_url: str) -> tuple[str, int]:
    parts = urlsplit(base_url)
    assert parts.hostname and parts.port, base_url
    return parts.hostname, parts.port


def connect(base_url: str, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(address(base_url), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request(method: str, path: str, headers: Iterable[tuple[str, str]] = (),
            body: bytes = b"", version: str = "HTTP/1.1", host: bool = True) -> bytes:
    """A request's bytes exactly as given: no Content-Length is added, nothing is checked."""
    lines = [f"{method} {path} {version}".encode("latin-1")]
    if host:
        lines.append(b"Host: zooserve.test")
    lines += [f"{name}: {value}".encode("latin-1") for name, value in headers]
    return CRLF.join(lines) + CRLF + CRLF + body


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}".encode() + CRLF + data + CRLF


LAST_CHUNK = b"0" + CRLF + CRLF
# A step of Connection.send_steps sent once the response before it has arrived.
AFTER_ANSWER = -1.0


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    arrived: float  # time.monotonic() when its last byte was read

    def header(self, name: str) -> str | None:
        values = [value for key, value in self.headers if key.lower() == name.lower()]
        return ", ".join(values) if values else None

    @property
    def announces_close(self) -> bool:
        tokens = (self.header("connection") or "").lower().split(",")
        return "close" in (token.strip() for token in tokens)

    def json(self) -> object:
        return json.loads(self.body)

    def error(self) -> str:
        """The message of a JSON {"error": "..."} body (an AssertionError for anything else)."""
        assert (self.header("content-type") or "").startswith("application/json"), self
        document = self.json()
        assert isinstance(document, dict) and isinstance(document.get("error"), str), self
        return document["error"]

    def __str__(self) -> str:
        return f"{self.status} {self.reason} {self.headers} {self.body[:300]!r}"


class Connection:
    """One client connection: sends raw bytes, reads responses and the end of the stream,
    each against a deadline (time.monotonic())."""

    def __init__(self, base_url: str, timeout: float = 10.0) -> None:
        self.sock = connect(base_url, timeout)
        self.opened = time.monotonic()
        self.buffer = b""
        self.eof = False
        self.eof_at: float | None = None

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self.sock.fileno()

    # sending

    def send(self, data: bytes) -> bool:
        """Send all of `data`; False when the server has already closed its side (a reset or
        a broken pipe: what it answered before is still read by `response`)."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            return False

    def answered(self, wait: float = 0.0) -> bool:
        """True when the server has sent something (or closed), read or not, waiting up to
        `wait` seconds for it."""
        return bool(self.buffer or self.eof or self.readable(wait))

    def readable(self, wait: float = 0.0) -> bool:
        """True when the socket has bytes (or the end of the stream) not read yet."""
        if self.eof:
            return False
        readable, _, _ = select.select([self.sock], [], [], max(wait, 0.0))
        return bool(readable)

    def send_steps(self, steps: Iterable[tuple[float, bytes]], until: float) -> list[Response]:
        """Each step: wait `delay` seconds, then send `data`; nothing after `until`
        (time.monotonic()). Sending stops as soon as the server answers or closes, as a
        client would, so that what it answered is not lost under a reset from bytes it
        never read; but a step whose delay is AFTER_ANSWER first reads the next response
        whole (returned, in order, with any others so read), then sends."""
        early = []
        for delay, data in steps:
            if delay == AFTER_ANSWER:
                early.append(self.response(max(until - time.monotonic(), 0.001)))
            elif self.answered(min(delay, until - time.monotonic())):
                break
            if time.monotonic() >= until or not self.send(data):
                break
        return early

    # receiving

    def fill(self, deadline: float) -> bool:
        """Read what is there into `buffer` (waiting until `deadline`); False at the end of
        the stream."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NoAnswer(f"nothing more by the deadline; read so far: {self.buffer[:300]!r}")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 16)
        except TimeoutError:
            raise NoAnswer(
                f"nothing more by the deadline; read so far: {self.buffer[:300]!r}"
            ) from None
        except ConnectionResetError:
            data = b""
        if not data:
            self.eof = True
            self.eof_at = time.monotonic()
            return False
        self.buffer += data
        return True

    def _take_line(self, deadline: float) -> bytes:
        while CRLF not in self.buffer:
            if not self.fill(deadline):
                raise NoAnswer(f"the stream ended inside a response: {self.buffer[:300]!r}")
        line, self.buffer = self.buffer.split(CRLF, 1)
        return line

    def _take(self, size: int, deadline: float) -> bytes:
        while len(self.buffer) < size:
            if not self.fill(deadline):
                raise NoAnswer(f"the stream ended inside a body: {self.buffer[:300]!r}")
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def response(self, timeout: float = 10.0) -> Response:
        """The next whole response, within `timeout` seconds: a body framed by
        Content-Length, by chunks, or (neither) by the end of the stream."""
        deadline = time.monotonic() + timeout
        while CRLF + CRLF not in self.buffer:
            if not self.fill(deadline):
                raise NoAnswer(f"closed without a (whole) response: {self.buffer[:300]!r}")
        status_line = self._take_line(deadline).decode("latin-1")
        version, _, rest = status_line.partition(" ")
        code, _, reason = rest.partition(" ")
        assert version.startswith("HTTP/1.") and code.isdigit(), status_line
        headers = []
        while line := self._take_line(deadline):
            name, colon, value = line.decode("latin-1").partition(":")
            assert colon, f"a header line without a colon: {line!r}"
            headers.append((name.strip(), value.strip()))
        answer = Response(int(code), reason, headers, b"", 0.0)
        length = answer.header("content-length")
        if length is not None:
            answer.body = self._take(int(length), deadline)
        elif "chunked" in (answer.header("transfer-encoding") or "").lower():
            pieces = []
            while size := int(self._take_line(deadline).split(b";")[0], 16):
                pieces.append(self._take(size, deadline))
                assert self._take(2, deadline) == CRLF
            while self._take_line(deadline):  # trailers
                pass
            answer.body = b"".join(pieces)
        elif int(code) >= 200 and int(code) not in (204, 304):
            while self.fill(deadline):
                pass
            answer.body, self.buffer = self.buffer, b""
        answer.arrived = time.monotonic()
        return answer

    def rest(self, timeout: float = 10.0) -> bytes:
        """Everything the server sends until it closes the connection, which it must do within
        `timeout` seconds (NoAnswer otherwise)."""
        deadline = time.monotonic() + timeout
        while self.fill(deadline):
            pass
        data, self.buffer = self.buffer, b""
        return data

    def assert_closed(self, timeout: float = 10.0) -> None:
        """The server closes the connection within `timeout` seconds and sends nothing more
        before it (no answer to anything sent after what it refused)."""
        extra = self.rest(timeout)
        assert extra == b"", f"the server sent more before closing: {extra[:300]!r}"


def exchange(base_url: str, data: bytes, timeout: float = 10.0) -> Response:
    """One request on a new connection, its response."""
    with Connection(base_url, timeout) as connection:
        connection.send(data)
        return connection.response(timeout)

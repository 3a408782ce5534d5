"""Request bodies over HTTP: the size limit every body is held to, reading a body within it,
and the request and response compression (`Content-Encoding`, `Accept-Encoding`: gzip and
deflate) that Triton's HTTP clients may use.

The limit is `max_request_bytes` (`--max-request-bytes`, `ZOOSERVE_MAX_REQUEST_BYTES`). A
declared `Content-Length` above it is refused with 413 before a byte of the body is read; a
body without one (chunked) is counted as it arrives and refused with 413 as soon as it
passes the limit; a compressed body is held to the same limit once decompressed, so a small
gzip bomb cannot grow past it either. Every 413 closes the connection, since the rest of
the body is never read."""

from __future__ import annotations

import asyncio
import contextlib
import re
import zlib
from collections.abc import Iterator

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from zooserve.serving.http_frontend import json_tensors
from zooserve.serving.http_frontend.status import HttpError

SETTING = "max_request_bytes (--max-request-bytes / ZOOSERVE_MAX_REQUEST_BYTES)"
# Responses smaller than this are sent as they are, even to a client that accepts gzip.
COMPRESS_AT_LEAST = 1024
_DIGITS = re.compile(r"[0-9]{1,20}")
_GUARDED = "zooserve.body_guard"  # set in the scope by the outermost BodyGuard


def read_json(raw: bytes | bytearray | memoryview, what: str, hint: str = "") -> object:
    """A JSON body (or part of one), strictly and within bounded memory: see
    zooserve/serving/http_frontend/json_tensors.py (UTF-8 only, no key twice, numbers Python and a
    64-bit float can hold, large arrays of numbers left in the body until decoded)."""
    return json_tensors.loads(raw, what, hint)


def too_large(what: str, limit: int) -> HttpError:
    return HttpError(
        413,
        f"{what} is larger than the server's limit of {limit} bytes, set by {SETTING}",
        {"Connection": "close"},
    )


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return None


def declared_length(value: bytes | str | None) -> int | None:
    """A Content-Length value as a number (None when absent); anything but plain digits is
    the client's mistake."""
    if value is None:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if not _DIGITS.fullmatch(text.strip()):
        raise HttpError(400, f"Content-Length must be a number of bytes, got {text[:40]!r}")
    return int(text)


class BodyGuard:
    """ASGI middleware that holds every request body to the server's limits while the app
    reads it: 413 at once for a Content-Length over `max_bytes`, and for a body that grows
    past it; 408 when the next piece of a body takes longer than `body_timeout` seconds. An
    answer sent before its request's body was wholly read says Connection: close (the rest
    of the body is never read, and nothing after it on the connection is answered).

    The outermost guard does the work; one nested inside it (the v2 app's own, for when it
    is mounted elsewhere, as in the Bento) passes requests through."""

    def __init__(self, app: ASGIApp, max_bytes: int, body_timeout: float = 30.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.body_timeout = body_timeout
        self.stopping = False
        self._waits: set[asyncio.Timeout] = set()  # bodies waited for now

    def stop_reading(self) -> None:
        """The server is stopping: every body still awaited is answered 503 at once (and
        any awaited from now on), so no request is left for the server to cancel."""
        self.stopping = True
        now = asyncio.get_running_loop().time()
        for wait in list(self._waits):
            wait.reschedule(now)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get(_GUARDED):
            await self.app(scope, receive, send)
            return
        scope[_GUARDED] = True
        try:
            length = declared_length(_header(scope, b"content-length"))
            if length is not None and length > self.max_bytes:
                raise too_large(f"the request body ({length} bytes)", self.max_bytes)
        except HttpError as exc:
            response = JSONResponse(
                {"error": exc.message}, status_code=exc.status, headers=exc.headers
            )
            await response(scope, receive, send)
            return
        has_body = (length or 0) > 0 or _header(scope, b"transfer-encoding") is not None
        received = 0
        complete = not has_body
        limit, timeout = self.max_bytes, self.body_timeout

        async def guarded_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                async with asyncio.timeout(0 if self.stopping else timeout) as wait:
                    self._waits.add(wait)
                    try:
                        message = await receive()
                    finally:
                        self._waits.discard(wait)
            except TimeoutError:
                if self.stopping:
                    raise HttpError(
                        503, "the server is shutting down before the request body arrived; "
                        "send the request again (to another replica)", {"Connection": "close"},
                    ) from None
                raise HttpError(
                    408, f"the request body stopped arriving: nothing for {timeout:g} s "
                    f"after {received} bytes (--http-body-timeout / "
                    "ZOOSERVE_HTTP_BODY_TIMEOUT)", {"Connection": "close"},
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(f"the request body (more than {received} bytes so far)",
                                    limit)
                complete = not message.get("more_body", False)
            else:  # http.disconnect
                complete = True
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not complete:
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != b"connection"]
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.app(scope, guarded_receive, closing_send)


class BodyBudget:
    """The bytes of request bodies being read at once, all connections of this process
    together, held under `max_bytes`: a body's Content-Length is reserved before it is read
    (so a body admitted is never refused halfway), a chunked body as it grows. Beyond the
    budget the request is answered 503 and its body is not read."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.held = 0

    @contextlib.contextmanager
    def hold(self) -> Iterator[BodyHold]:
        """A holder for one request's bytes, all given back when the block ends."""
        holder = BodyHold(self)
        try:
            yield holder
        finally:
            self.held -= holder.bytes
            holder.bytes = 0


class BodyHold:
    """The bytes one request holds of a BodyBudget."""

    def __init__(self, budget: BodyBudget) -> None:
        self.budget = budget
        self.bytes = 0

    def take(self, count: int) -> None:
        budget = self.budget
        if budget.held + count > budget.max_bytes:
            raise HttpError(
                503, f"the server is reading {budget.held} bytes of request bodies, and "
                f"{count} more would pass its limit of {budget.max_bytes} "
                "(--http-body-buffer-bytes / ZOOSERVE_HTTP_BODY_BUFFER_BYTES): retry later "
                "or at another replica", {"Connection": "close", "Retry-After": "1"},
            )
        budget.held += count
        self.bytes += count


async def read_body(request: Request, limit: int, hold: BodyHold | None = None
                    ) -> bytes | bytearray:
    """The whole body as sent (`decompress` undoes its Content-Encoding), within `limit`
    bytes and, with `hold`, within the budget it draws on. The buffer grows as bytes arrive:
    what a client only declared is never allocated."""
    try:
        return await _read(request, limit, hold)
    except ClientDisconnect:
        raise HttpError(400, "the client went away before its body arrived") from None


def identity(encoding: str) -> bool:
    """True for a body sent as it is (no Content-Encoding, or identity)."""
    return encoding.strip().lower() in ("", "identity")


async def _read(request: Request, limit: int, hold: BodyHold | None) -> bytes | bytearray:
    length = declared_length(request.headers.get("content-length"))
    if length is not None and length > limit:
        raise too_large(f"the request body ({length} bytes)", limit)
    if hold is not None and length is not None:
        hold.take(length)
    buffer = bytearray()
    async for chunk in request.stream():
        if length is None:
            if len(buffer) + len(chunk) > limit:
                raise too_large(
                    f"the request body (more than {len(buffer) + len(chunk)} bytes so far)",
                    limit)
            if hold is not None:
                hold.take(len(chunk))
        elif len(buffer) + len(chunk) > length:
            raise HttpError(400, f"the body is longer than its Content-Length {length}")
        buffer += chunk
    if length is not None and len(buffer) != length:
        raise HttpError(400, f"the body ended after {len(buffer)} of its {length} bytes")
    return buffer


def decompress(body: bytes | bytearray, encoding: str, limit: int) -> bytes | bytearray:
    """A body sent with `Content-Encoding` gzip or deflate (zlib's format, as the HTTP
    specification and tritonclient have it; a raw deflate stream is accepted too), at most
    `limit` bytes once decompressed."""
    coding = encoding.strip().lower()
    if identity(coding):
        return body
    if coding in ("gzip", "x-gzip"):
        wbits = 16 + zlib.MAX_WBITS
    elif coding == "deflate":
        # A zlib stream starts with a header whose first two bytes are a multiple of 31.
        zlib_header = len(body) >= 2 and (body[0] << 8 | body[1]) % 31 == 0
        wbits = zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS
    else:
        raise HttpError(
            415, f"Content-Encoding {encoding[:40]!r} is not supported; send the body as it "
            "is, or compressed with gzip or deflate",
        )
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise HttpError(400, f"the body is not valid {coding} (Content-Encoding): {exc}") from None
    if len(out) > limit:
        raise too_large(f"the request body decompressed ({coding})", limit)
    if not inflater.eof:
        raise HttpError(400, f"the {coding} body (Content-Encoding) ends before its stream does")
    if inflater.unused_data:
        raise HttpError(
            400, f"the {coding} body (Content-Encoding) has "
            f"{len(inflater.unused_data)} bytes after its compressed stream",
        )
    return out


def accepted_encoding(accept: str) -> str | None:
    """gzip or deflate if the client's Accept-Encoding takes one (gzip first), else None."""
    taken: dict[str, float] = {}
    for part in accept.split(","):
        name, _, params = part.strip().partition(";")
        quality = 1.0
        match = re.search(r"q\s*=\s*([0-9.]+)", params)
        if match:
            try:
                quality = float(match.group(1))
            except ValueError:
                quality = 0.0
        taken[name.strip().lower()] = quality
    for coding in ("gzip", "deflate"):
        if taken.get(coding, taken.get("*", 0.0)) > 0:
            return coding
    return None


def compress(body: bytes, coding: str) -> bytes:
    """A response body compressed as `accepted_encoding` chose (deflate in zlib's format)."""
    if coding == "gzip":
        packer = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    else:
        packer = zlib.compressobj(6)
    return packer.compress(body) + packer.flush()

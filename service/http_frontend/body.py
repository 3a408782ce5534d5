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

import re
import zlib

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.http_frontend import json_tensors
from service.http_frontend.status import HttpError

SETTING = "max_request_bytes (--max-request-bytes / ZOOSERVE_MAX_REQUEST_BYTES)"
# Responses smaller than this are sent as they are, even to a client that accepts gzip.
COMPRESS_AT_LEAST = 1024
_DIGITS = re.compile(r"[0-9]{1,20}")


def read_json(raw: bytes | bytearray | memoryview, what: str, hint: str = "") -> object:
    """A JSON body (or part of one), strictly and within bounded memory: see
    service/http_frontend/json_tensors.py (UTF-8 only, no key twice, numbers Python and a
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


class BodyLimit:
    """ASGI middleware holding every request body to `max_bytes`: 413 at once for a larger
    Content-Length, and for a body that grows past the limit while it is read (the handler
    reading it gets the 413 as an HttpError)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
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
        received = 0
        limit = self.max_bytes

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large(f"the request body (more than {received} bytes so far)",
                                    limit)
            return message

        await self.app(scope, counted, send)


async def read_body(request: Request, limit: int) -> bytes | bytearray:
    """The whole body as sent (`decompress` undoes its Content-Encoding), within `limit`
    bytes. With a Content-Length it is read into one buffer of that size (no second copy
    joining the pieces)."""
    try:
        return await _read(request, limit)
    except ClientDisconnect:
        raise HttpError(400, "the client went away before its body arrived") from None


def identity(encoding: str) -> bool:
    """True for a body sent as it is (no Content-Encoding, or identity)."""
    return encoding.strip().lower() in ("", "identity")


async def _read(request: Request, limit: int) -> bytes | bytearray:
    length = declared_length(request.headers.get("content-length"))
    if length is not None and length > limit:
        raise too_large(f"the request body ({length} bytes)", limit)
    if length is not None:
        buffer = bytearray(length)
        filled = 0
        async for chunk in request.stream():
            end = filled + len(chunk)
            if end > length:
                raise HttpError(400, f"the body is longer than its Content-Length {length}")
            buffer[filled:end] = chunk
            filled = end
        if filled != length:
            raise HttpError(400, f"the body ended after {filled} of its {length} bytes")
        return buffer
    else:
        chunks: list[bytes] = []
        total = 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > limit:
                raise too_large(f"the request body (more than {total} bytes so far)", limit)
            chunks.append(chunk)
        return b"".join(chunks)


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

"""Hostile HTTP clients against a real `zooserve serve` (issue 21, item 8), over plain sockets
so that nothing normalises the hostile part away: request smuggling by framing (both
Transfer-Encoding and Content-Length, two Content-Lengths, folded headers, unknown versions
and transfer codings), slow heads and bodies, idle and surplus connections, bodies larger
than allowed, and declared bodies that would cost memory before a byte of them arrives.

A table of cases runs against one server with short limits; after every case the server
must still answer a good inference request on a new connection. The cases that need many
connections at once, or other settings, are in tests/test_hostile_http_load.py."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from tests.helpers.hostile import (
    BODY_TIMEOUT,
    EARLY,
    GOOD_BODY,
    HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    INFER,
    MAX_REQUEST_BYTES,
    SLACK,
    SMUGGLED,
    TE_CHUNKED,
    MiB,
    assert_serving,
    head,
    infer,
)
from tests.helpers.raw_http import (
    AFTER_ANSWER,
    LAST_CHUNK,
    Connection,
    chunk,
    request,
)

# The table


@dataclass(frozen=True)
class Case:
    """Send `steps` ((seconds to wait first, bytes)) on one new connection; expect responses
    with `statuses`, in order. The last response: a JSON {"error"} holding `error` when that
    is set (any JSON error with `json_error`); Connection: close exactly when `announced`
    (None: either).
    `closes`: the server then closes the connection and sends nothing more (so a request
    smuggled after the refused one is never answered). `window` (seconds): when the last
    response arrives after the connection opened; with `silent_close`, when the server closes
    after the last response (or the opening)."""

    id: str
    steps: tuple[tuple[float, bytes], ...]
    statuses: tuple[frozenset[int], ...]
    closes: bool
    announced: bool | None
    silent_close: bool
    error: str | None = None
    json_error: bool = False
    window: tuple[float, float] | None = None


def case(id: str, *parts: bytes | tuple[float, bytes], status: int | set[int] | None,
         then: tuple[int, ...] = (), closes: bool = True, **options) -> Case:
    """`parts`: bytes sent at once, or (delay, bytes). `status`: the answer expected (None:
    the server closes without one); `then`: statuses answered before it on the same
    connection."""
    steps = tuple(part if isinstance(part, tuple) else (0.0, part) for part in parts)
    expected = tuple(frozenset({s}) for s in then)
    if status is not None:
        expected += (frozenset(status if isinstance(status, set) else {status}),)
    silent = status is None
    announced = (not silent) if closes else None  # a silent close follows a kept-alive answer
    return Case(id, steps, expected, closes=closes or silent, announced=announced,
                silent_close=silent, **options)


def dribble(data: bytes, every: float) -> tuple[tuple[float, bytes], ...]:
    return tuple((every if i else 0.0, data[i:i + 1]) for i in range(len(data)))


def pieces(data: bytes, count: int, every: float,
           first: float = 0.0) -> tuple[tuple[float, bytes], ...]:
    size = -(-len(data) // count)
    return tuple((every if i else first, data[i:i + size]) for i in range(0, len(data), size))


def duplicate_key(key: str, value: str) -> bytes:
    """The good body with `key` given twice in the object that holds it (json.dumps cannot
    write that, so the key is repeated in the text)."""
    text = GOOD_BODY.decode()
    marker = f'"{key}": '
    at = text.index(marker)
    return (text[:at] + f'{marker}{value}, ' + text[at:]).encode()


HEAD_TIMED_OUT = (EARLY * HEADER_TIMEOUT, HEADER_TIMEOUT + SLACK)
BODY_TIMED_OUT = (EARLY * BODY_TIMEOUT, BODY_TIMEOUT + SLACK)
FRAMING_REFUSED = {400, 501}  # "Transfer-Encoding other than chunked": h11 decides which
IDLE_PAUSE = 0.5 * IDLE_TIMEOUT

CASES = [
    # Smuggling by framing: every one is refused, the connection closes, and the request
    # sent after it is never answered.
    case("te-and-cl-then-smuggled",
         head(headers=(TE_CHUNKED, ("Content-Length", "4"))) + LAST_CHUNK + SMUGGLED,
         status=400),
    case("cl-and-te-then-smuggled",
         head(headers=(("Content-Length", "4"), TE_CHUNKED)) + LAST_CHUNK + SMUGGLED,
         status=400),
    case("te-and-cl-with-bare-lf-line-ends",
         head(headers=(TE_CHUNKED, ("Content-Length", "4"))).replace(b"\r\n", b"\n")
         + LAST_CHUNK + SMUGGLED,
         status=400),
    case("te-and-cl-on-a-get",
         head("/v2/health/live", (TE_CHUNKED, ("Content-Length", "5")), "GET")
         + LAST_CHUNK + SMUGGLED,
         status=400),
    case("te-and-cl-after-a-good-request-on-the-same-connection",
         infer() + head(headers=(TE_CHUNKED, ("Content-Length", "4"))) + LAST_CHUNK + SMUGGLED,
         then=(200,), status=400),
    case("two-equal-content-lengths",
         head(headers=(("Content-Length", "5"), ("Content-Length", "5"))) + b"{}   " + SMUGGLED,
         status=400),
    case("two-different-content-lengths",
         head(headers=(("Content-Length", "2"), ("Content-Length", str(2 + len(SMUGGLED)))))
         + b"{}" + SMUGGLED,
         status=400),
    case("content-length-list", head(headers=(("Content-Length", "5, 5"),)) + b"{}   "
         + SMUGGLED, status=400),
    case("content-length-not-a-number", head(headers=(("Content-Length", "2x"),)) + b"{}",
         status=400),
    case("content-length-negative", head(headers=(("Content-Length", "-1"),)) + b"{}",
         status=400),
    case("obs-fold-space", head(headers=(("X-Note", "a"),)).replace(
         b"X-Note: a\r\n", b"X-Note: a\r\n  folded\r\n") + SMUGGLED, status=400),
    case("obs-fold-tab", head("/v2/health/live", (("X-Note", "a"),), "GET").replace(
         b"X-Note: a\r\n", b"X-Note: a\r\n\tfolded\r\n") + SMUGGLED, status=400),
    case("obs-fold-continuing-content-length",
         head(headers=(("Content-Length", "2"),)).replace(
             b"Content-Length: 2\r\n", b"Content-Length: 2\r\n 0\r\n") + b"{}" + SMUGGLED,
         status=400),
    case("header-line-without-colon", b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nnocolon\r\n"
         b"\r\n" + SMUGGLED, status=400),
    case("space-before-header-colon",
         head(headers=(("Content-Length ", "2"),)) + b"{}" + SMUGGLED, status=400),
    case("chunk-size-not-hex", head(headers=(TE_CHUNKED,)) + b"zz\r\n{}\r\n" + LAST_CHUNK
         + SMUGGLED, status=400),
    case("http-2.0-over-http-1-framing",
         request("GET", "/v2/health/live", version="HTTP/2.0") + SMUGGLED, status=505),
    case("http-2-prior-knowledge-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + SMUGGLED,
         status=505),
    case("http-1.2", request("GET", "/v2/health/live", version="HTTP/1.2") + SMUGGLED,
         status=505),
    case("http-9.9", request("GET", "/v2/health/live", version="HTTP/9.9") + SMUGGLED,
         status=505),
    case("http-1.10", request("GET", "/v2/health/live", version="HTTP/1.10") + SMUGGLED,
         status=505),
    case("http-0.9", request("GET", "/v2/health/live", version="HTTP/0.9") + SMUGGLED,
         status=505),
    case("transfer-encoding-gzip",
         head(headers=(("Transfer-Encoding", "gzip"),)) + b"{}" + SMUGGLED,
         status=FRAMING_REFUSED),
    case("transfer-encoding-identity",
         head(headers=(("Transfer-Encoding", "identity"),)) + b"{}" + SMUGGLED,
         status=FRAMING_REFUSED),
    case("transfer-encoding-gzip-then-chunked",
         head(headers=(("Transfer-Encoding", "gzip, chunked"),)) + LAST_CHUNK + SMUGGLED,
         status=FRAMING_REFUSED),
    case("transfer-encoding-chunked-twice",
         head(headers=(TE_CHUNKED, TE_CHUNKED)) + LAST_CHUNK + SMUGGLED,
         status=FRAMING_REFUSED),
    # Bodies over --max-request-bytes: refused before (or as soon as) they pass it.
    case("content-length-over-the-limit-no-body-sent",
         head(headers=(("Content-Length", str(MAX_REQUEST_BYTES + 1)),)),
         status=413, json_error=True),
    case("content-length-absurd",
         head(headers=(("Content-Length", str(10**18)),)) + b"{" + SMUGGLED,
         status=413, json_error=True),
    case("chunked-body-growing-past-the-limit",
         head(headers=(TE_CHUNKED,)),
         *[chunk(b" " * MiB)] * (MAX_REQUEST_BYTES // MiB + 2), LAST_CHUNK,
         status=413, json_error=True),
    # Admission before the body: refused at once, never waiting for (or reading) the body.
    case("unknown-model-before-its-body",
         head("/v2/models/dolphins/infer", (("Content-Length", "1000"),)),
         status=404, error="dolphins"),
    case("unknown-model-expecting-100-continue-gets-no-continue",
         head("/v2/models/dolphins/infer", (("Content-Length", "1000"),
                                            ("Expect", "100-continue"))),
         status=404, error="dolphins"),
    case("unknown-path-before-its-body",
         head("/v2/nowhere", (("Content-Length", "1000"),)), status=404, error="nowhere"),
    case("wrong-method-before-its-body",
         head(headers=(("Content-Length", "1000"),), method="PUT"), status=405,
         json_error=True),
    case("get-with-an-unread-body-then-smuggled",
         head("/v2/health/live", (("Content-Length", str(len(SMUGGLED))),), "GET")
         + SMUGGLED, status=200),
    case("unknown-model-its-body-is-not-a-request",
         head("/v2/models/dolphins/infer", (("Content-Length", str(len(SMUGGLED))),))
         + SMUGGLED, status=404, error="dolphins"),
    # Time: a slow head, a stalled body, idle connections.
    case("head-never-finished", b"POST " + INFER.encode() + b" HTTP/1.1\r\nHost: t\r\n",
         status=408, json_error=True, window=HEAD_TIMED_OUT),
    case("head-growing-past-what-h11-buffers",
         b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\nX-Padding: " + b"a" * 20_000,
         status={400, 431}),
    case("head-one-byte-every-200ms", *dribble(infer(), 0.2),
         status=408, json_error=True, window=HEAD_TIMED_OUT),
    case("head-timeout-counts-from-its-first-byte", (IDLE_PAUSE, b"POST /v2"),
         status=408, json_error=True,
         window=(IDLE_PAUSE + EARLY * HEADER_TIMEOUT, IDLE_PAUSE + HEADER_TIMEOUT + SLACK)),
    case("second-head-pipelined-never-finished", infer() + b"POST /v2/models/pen",
         then=(200,), status=408, json_error=True,
         window=(EARLY * HEADER_TIMEOUT, HEADER_TIMEOUT + SLACK)),
    case("second-head-after-the-answer-never-finished", infer(),
         (AFTER_ANSWER, b"POST /v2/models/pen"), then=(200,), status=408, json_error=True,
         window=(EARLY * HEADER_TIMEOUT, HEADER_TIMEOUT + SLACK)),
    case("body-stalls", head(headers=(("Content-Length", "100"),)) + b'{"inputs": [',
         status=408, json_error=True, window=BODY_TIMED_OUT),
    case("body-stalls-before-its-first-byte", head(headers=(("Content-Length", "100"),)),
         status=408, json_error=True, window=BODY_TIMED_OUT),
    case("body-stalls-after-100-continue",
         head(headers=(("Content-Length", "100"), ("Expect", "100-continue"))),
         then=(100,), status=408, json_error=True, window=BODY_TIMED_OUT),
    case("chunked-body-stalls-between-chunks",
         head(headers=(TE_CHUNKED,)) + chunk(b'{"inputs": ['),
         status=408, json_error=True, window=BODY_TIMED_OUT),
    case("chunked-body-stalls-inside-a-chunk",
         head(headers=(TE_CHUNKED,)) + b"40\r\n{\"inputs\"",
         status=408, json_error=True, window=BODY_TIMED_OUT),
    case("idle-new-connection-closed-silently", status=None,
         window=(EARLY * IDLE_TIMEOUT, IDLE_TIMEOUT + SLACK)),
    case("idle-after-a-response-closed-silently", infer(), then=(200,), status=None,
         window=(EARLY * IDLE_TIMEOUT, IDLE_TIMEOUT + SLACK)),
    # Controls: what is slow but within every limit is served, on a kept-alive connection.
    case("body-in-pieces-each-within-the-body-timeout",
         head(headers=(("Content-Length", str(len(GOOD_BODY))),)),
         *pieces(GOOD_BODY, 6, 0.4 * BODY_TIMEOUT, first=0.4 * BODY_TIMEOUT),
         status=200, closes=False),
    case("http-1.0-is-spoken", request("POST", INFER, (
         ("Content-Type", "application/json"), ("Content-Length", str(len(GOOD_BODY)))),
         GOOD_BODY, version="HTTP/1.0", host=False), status=200),
    case("two-good-requests-pipelined", infer() + infer(), then=(200,), status=200,
         closes=False),
    case("chunked-good-request-then-a-pipelined-one",
         head(headers=(TE_CHUNKED,)) + chunk(GOOD_BODY[:20]) + chunk(GOOD_BODY[20:])
         + LAST_CHUNK + infer(), then=(200,), status=200, closes=False),
    case("large-body-within-the-limit",
         infer(GOOD_BODY[:-1] + b" " * (MAX_REQUEST_BYTES - MiB) + b"}"), status=200,
         closes=False),
    # JSON bodies that are not what they must be (read whole, so no close is required).
    case("utf-16-body-with-bom", infer(GOOD_BODY.decode().encode("utf-16")), status=400,
         closes=False, json_error=True),
    case("utf-16-le-body", infer(GOOD_BODY.decode().encode("utf-16-le")), status=400,
         closes=False, json_error=True),
    case("utf-32-body", infer(GOOD_BODY.decode().encode("utf-32")), status=400,
         closes=False, json_error=True),
    case("latin-1-body", infer(GOOD_BODY.replace(b'"hostile"', '"caf\u00e9"'.encode("latin-1"))),
         status=400, closes=False, json_error=True),
    case("duplicate-key-inputs", infer(duplicate_key("inputs", "[]")), status=400,
         closes=False, error="inputs"),
    case("duplicate-key-inside-a-tensor", infer(duplicate_key("datatype", '"INT64"')),
         status=400, closes=False, error="datatype"),
]


def test_the_table_is_big_enough():
    assert len({c.id for c in CASES}) == len(CASES) >= 25


@pytest.mark.parametrize("hostile_case", CASES, ids=[c.id for c in CASES])
def test_hostile_request(hostile, hostile_case: Case):
    c = hostile_case
    patience = SLACK + 2 * max(HEADER_TIMEOUT, BODY_TIMEOUT)
    with Connection(hostile.http_url) as connection:
        answers = connection.send_steps(c.steps, until=connection.opened + patience)
        answers += [connection.response(timeout=patience)
                    for _ in c.statuses[len(answers):]]
        for answer, statuses in zip(answers, c.statuses, strict=True):
            assert answer.status in statuses, f"{c.id}: {answer}"
        last = answers[-1] if answers else None
        if last is not None:
            if c.error is not None:
                assert c.error in last.error(), f"{c.id}: {last}"
            if c.json_error:
                last.error()
            if c.announced is not None:
                assert last.announces_close == c.announced, \
                    f"{c.id}: Connection: close {'missing' if c.announced else 'sent'}: {last}"
        if c.closes:
            connection.assert_closed(timeout=IDLE_TIMEOUT + SLACK)
        if c.window is not None:
            if c.silent_close:
                elapsed = connection.eof_at - (last.arrived if last else connection.opened)
            else:
                elapsed = last.arrived - connection.opened
            earliest, latest = c.window
            assert earliest <= elapsed <= latest, \
                f"{c.id}: after {elapsed:.2f} s, not within [{earliest}, {latest}]"
    assert_serving(hostile)



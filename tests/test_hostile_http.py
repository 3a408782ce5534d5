"""Hostile HTTP clients against a real `zooserve serve` (issue 21, item 8), over plain sockets
so that nothing normalises the hostile part away: request smuggling by framing (both
Transfer-Encoding and Content-Length, two Content-Lengths, folded headers, unknown versions
and transfer codings), slow heads and bodies, idle and surplus connections, bodies larger
than allowed, and declared bodies that would cost memory before a byte of them arrives.

A table of cases runs against one server with short limits; after every case the server
must still answer a good inference request on a new connection. The cases that need many
connections at once, or other settings, follow the table."""

from __future__ import annotations

import json
import select
import selectors
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tests.helpers.paths import MODELS
from tests.helpers.raw_http import (
    AFTER_ANSWER,
    LAST_CHUNK,
    Connection,
    Response,
    chunk,
    exchange,
    request,
)
from tests.helpers.server import RunningServer, hold_lone_requests, run_server

MiB = 1024 * 1024
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
IDLE_TIMEOUT = 2.0
MAX_CONNECTIONS = 64
MAX_INFLIGHT = 4
MAX_REQUEST_BYTES = 8 * MiB
BODY_BUFFER_BYTES = 16 * MiB
# How late an answer may come after its timeout on a loaded 2-core machine; and the
# fraction of a timeout that must have passed before it (the clock here starts a little
# before the server's, so this only leaves room for rounding).
SLACK = 4.0
EARLY = 0.8

INFER = "/v2/models/penguins/infer"
GOOD_BODY = json.dumps({"id": "hostile", "inputs": [{
    "name": "features", "datatype": "FP32", "shape": [1, 4],
    "data": [39.1, 18.7, 181.0, 3750.0]}]}).encode()
# What a smuggler hopes the server reads as a request of its own.
SMUGGLED = request("GET", "/v2/health/live")
TOKEN = "hostile-http-test-token-5e8d0c71a2"


def infer(body: bytes = GOOD_BODY, headers: tuple[tuple[str, str], ...] = (),
          path: str = INFER, close: bool = False) -> bytes:
    extra = (("Connection", "close"),) if close else ()
    return request("POST", path, (("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body))), *headers, *extra), body)


def head(path: str = INFER, headers: tuple[tuple[str, str], ...] = (),
         method: str = "POST") -> bytes:
    return request(method, path, (("Content-Type", "application/json"), *headers))


def penguins_only(tmp: Path) -> Path:
    """A repository of the shipped penguins model alone (a server starts faster)."""
    repository = tmp / "models"
    shutil.copytree(MODELS / "penguins", repository / "penguins")
    return repository


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    with run_server(
        penguins_only(tmp), tmp,
        "--http-header-timeout", str(HEADER_TIMEOUT), "--http-body-timeout", str(BODY_TIMEOUT),
        "--http-idle-timeout", str(IDLE_TIMEOUT),
        "--http-max-connections", str(MAX_CONNECTIONS), "--max-inflight", str(MAX_INFLIGHT),
        "--max-request-bytes", str(MAX_REQUEST_BYTES),
        "--http-body-buffer-bytes", str(BODY_BUFFER_BYTES),
    ) as running:
        assert_serving(running)
        yield running


def assert_serving(server: RunningServer, headers: tuple[tuple[str, str], ...] = ()) -> None:
    """A good inference request on a new connection is answered, and right."""
    answer = exchange(server.http_url, infer(headers=headers, close=True), timeout=30)
    assert answer.status == 200, f"{answer}\n{server.log()[-3000:]}"
    document = answer.json()
    assert document["model_name"] == "penguins" and document["id"] == "hostile", document
    (output,) = document["outputs"]
    assert output["name"] == "probabilities" and output["shape"] == [1, 3], output


def assert_refused_and_closed(connection: Connection, statuses: set[int],
                              timeout: float = 10.0) -> Response:
    """The next response is one of `statuses`, a JSON error that says Connection: close, and
    the connection then ends with nothing more."""
    answer = connection.response(timeout)
    assert answer.status in statuses, str(answer)
    answer.error()
    assert answer.announces_close, str(answer)
    connection.assert_closed()
    return answer


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
TE_CHUNKED = ("Transfer-Encoding", "chunked")
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


# Many connections at once


def wait_for_answers(connections: list[Connection], timeout: float,
                     sample=None) -> dict[Connection, list[Response]]:
    """Read every connection until it closes or `timeout` passes; its whole responses.
    `sample()` is called between reads (for a memory reading)."""
    selector = selectors.DefaultSelector()
    for connection in connections:
        selector.register(connection.sock, selectors.EVENT_READ, connection)
    deadline = time.monotonic() + timeout
    open_ = set(connections)
    while open_ and time.monotonic() < deadline:
        if sample is not None:
            sample()
        for key, _ in selector.select(timeout=0.05):
            connection = key.data
            if not connection.fill(time.monotonic() + 1):  # readable: no wait
                selector.unregister(connection.sock)
                open_.discard(connection)
    selector.close()
    return {connection: parse_all(connection) for connection in connections}


def parse_all(connection: Connection) -> list[Response]:
    answers = []
    while connection.buffer:
        answers.append(connection.response(timeout=1))
    return answers


def sync(server: RunningServer) -> None:
    """A round trip on a new connection: the server has taken in what was sent before it."""
    for _ in range(2):
        answer = exchange(server.http_url, request("GET", "/v2/health/live"))
        assert answer.status == 200, str(answer)


def hold_bodies(server: RunningServer, count: int, length: int,
                headers: tuple[tuple[str, str], ...] = ()) -> list[Connection]:
    """`count` inference requests declaring `length` body bytes, one of which is sent."""
    held = []
    for _ in range(count):
        connection = Connection(server.http_url)
        connection.send(head(headers=(("Content-Length", str(length)), *headers)) + b"{")
        held.append(connection)
    return held


def assert_timed_out(held: list[Connection]) -> None:
    """Each held request is answered 408 (Connection: close) after the body timeout, and
    closed."""
    answers = wait_for_answers(held, BODY_TIMEOUT + SLACK)
    for connection in held:
        assert connection.eof, "a held body was not closed after the body timeout"
        statuses = [answer.status for answer in answers[connection]]
        assert statuses == [408], answers[connection]
        (answer,) = answers[connection]
        answer.error()
        assert answer.announces_close, str(answer)
        connection.close()


def test_max_inflight_is_checked_before_the_body(hostile):
    held = hold_bodies(hostile, MAX_INFLIGHT, 100)
    try:
        sync(hostile)
        with Connection(hostile.http_url) as fifth:
            fifth.send(head(headers=(("Content-Length", "100"),)))
            assert_refused_and_closed(fifth, {429})
        assert_timed_out(held)
    finally:
        for connection in held:
            connection.close()
    assert_serving(hostile)


def test_the_body_buffer_is_shared_and_refused_with_503(hostile):
    held = hold_bodies(hostile, BODY_BUFFER_BYTES // MAX_REQUEST_BYTES, MAX_REQUEST_BYTES)
    try:
        sync(hostile)
        with Connection(hostile.http_url) as small:  # declared: reserved before it is read
            small.send(head(headers=(("Content-Length", "100"),)))
            assert_refused_and_closed(small, {503})
        with Connection(hostile.http_url) as chunked:  # counted as it grows
            chunked.send(head(headers=(TE_CHUNKED,)) + chunk(b'{"inputs": ['))
            assert_refused_and_closed(chunked, {503})
        assert_timed_out(held)
    finally:
        for connection in held:
            connection.close()
    assert_serving(hostile)


def server_rss(server: RunningServer) -> int:
    return psutil.Process(server.process.pid).memory_info().rss


def test_declared_bodies_cost_no_memory_before_they_arrive(hostile):
    """32 requests each declaring the largest body allowed, one byte of it sent: most are
    refused at once (--max-inflight, the body buffer), the rest time out, and the server's
    memory does not grow by what they declared."""
    assert_serving(hostile)
    before = server_rss(hostile)
    peak = [before]
    held = hold_bodies(hostile, 32, MAX_REQUEST_BYTES)
    try:
        answers = wait_for_answers(
            held, BODY_TIMEOUT + SLACK, lambda: peak.append(server_rss(hostile)))
        assert all(connection.eof for connection in held), "not every connection was closed"
        statuses = sorted(answer.status for connection in held for answer in answers[connection])
        assert len(statuses) == 32, statuses
        refused = [s for s in statuses if s in (429, 503)]
        timed_out = [s for s in statuses if s == 408]
        assert len(refused) >= 32 - MAX_INFLIGHT and len(refused) + len(timed_out) == 32, \
            statuses
        for connection in held:
            (answer,) = answers[connection]
            answer.error()
            assert answer.announces_close, str(answer)
    finally:
        for connection in held:
            connection.close()
    assert max(peak) < before + 100 * MiB, f"RSS grew by {(max(peak) - before) / MiB:.0f} MiB"
    assert_serving(hostile)


def test_slow_heads_and_idle_connections_are_closed_and_others_served(hostile):
    """20 clients send a head one byte every 0.2 s, 10 send nothing: each slow one gets 408
    within the header timeout (and slack), each idle one is closed without a word after the
    idle timeout, and a good request is served meanwhile."""
    slow_request = infer()
    slow = [Connection(hostile.http_url) for _ in range(20)]
    idle = [Connection(hostile.http_url) for _ in range(10)]
    everyone = slow + idle
    sent = dict.fromkeys(slow, 0)
    started = time.monotonic()
    deadline = started + max(HEADER_TIMEOUT, IDLE_TIMEOUT) + SLACK
    served_meanwhile = False
    next_byte = started
    try:
        while not all(c.eof for c in everyone) and time.monotonic() < deadline:
            if time.monotonic() >= next_byte:
                next_byte = time.monotonic() + 0.2
                for connection in slow:
                    at = sent[connection]
                    if not connection.answered() and at < len(slow_request):
                        connection.send(slow_request[at:at + 1])
                        sent[connection] = at + 1
            if not served_meanwhile and time.monotonic() - started > 0.5:
                assert_serving(hostile)
                served_meanwhile = True
            waiting = [c for c in everyone if not c.eof]
            for connection in select.select(waiting, [], [], 0.02)[0]:
                connection.fill(time.monotonic() + 1)  # readable: no wait
        assert served_meanwhile
        still_open = [c for c in everyone if not c.eof]
        assert not still_open, f"{len(still_open)} connections still open after " \
            f"{time.monotonic() - started:.1f} s"
        for connection in slow:
            assert 0 < sent[connection] < len(slow_request)
            (answer,) = parse_all(connection)
            assert answer.status == 408 and answer.announces_close, str(answer)
            answer.error()
            assert connection.eof_at - connection.opened <= HEADER_TIMEOUT + SLACK
        for connection in idle:
            assert connection.buffer == b"", "an idle connection was sent something"
            assert EARLY * IDLE_TIMEOUT <= connection.eof_at - connection.opened \
                <= IDLE_TIMEOUT + SLACK
    finally:
        for connection in everyone:
            connection.close()
    assert_serving(hostile)


# Other settings: a connection cap, a bearer token, a model queue limit; large limits


CAP = 8
QUEUE = 2


@pytest.fixture(scope="module")
def capped(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("capped")
    with run_server(penguins_only(tmp), tmp, "--http-max-connections", str(CAP),
                    "--http-idle-timeout", "30", "--http-header-timeout", "5",
                    "--http-body-timeout", str(BODY_TIMEOUT), "--max-queue-size", str(QUEUE),
                    env={"ZOOSERVE_AUTH_TOKEN": TOKEN}) as running:
        yield running


BEARER = (("Authorization", f"Bearer {TOKEN}"),)


def test_connections_beyond_the_cap_get_503_and_close(capped):
    for _ in range(2):  # the second round: closed connections were given back
        idle = [Connection(capped.http_url) for _ in range(CAP)]
        try:
            with Connection(capped.http_url) as beyond:
                assert_refused_and_closed(beyond, {503})  # at once, with nothing sent
            with Connection(capped.http_url) as beyond:  # its request is never served
                beyond.send(infer(headers=BEARER) + SMUGGLED)
                assert_refused_and_closed(beyond, {503})
            touched, _, _ = select.select([c.sock for c in idle], [], [], 0.2)
            assert not touched, "a connection within the cap was answered or closed"
        finally:
            for connection in idle:
                connection.close()
        deadline = time.monotonic() + 10
        while True:  # the server notices the closes in its own time
            answer = exchange(capped.http_url, infer(headers=BEARER, close=True))
            if answer.status == 200 or time.monotonic() > deadline:
                break
            assert answer.status == 503, str(answer)
            time.sleep(0.05)
        assert answer.status == 200, str(answer)
    assert_serving(capped, BEARER)


def test_the_token_is_checked_before_the_body(capped):
    for headers in ((), (("Authorization", "Bearer not-the-token-0000000000000"),)):
        with Connection(capped.http_url) as connection:
            connection.send(head(headers=(("Content-Length", "1000"), *headers)))
            assert_refused_and_closed(connection, {401})
        with Connection(capped.http_url) as connection:  # its body is never read as a request
            connection.send(head(headers=(("Content-Length", str(len(SMUGGLED))), *headers))
                            + SMUGGLED)
            assert_refused_and_closed(connection, {401})
    with Connection(capped.http_url) as connection:
        connection.send(head("/v2/models/dolphins/infer", (("Content-Length", "1000"),
                                                           *BEARER)))
        assert "dolphins" in assert_refused_and_closed(connection, {404}).error()
    assert exchange(capped.http_url, request("GET", "/v2/health/ready")).status == 200
    assert_serving(capped, BEARER)


def test_the_models_queue_limit_is_checked_before_the_body(capped):
    held = hold_bodies(capped, QUEUE, 100, BEARER)
    try:
        sync(capped)
        with Connection(capped.http_url) as third:
            third.send(head(headers=(("Content-Length", "100"), *BEARER)))
            assert_refused_and_closed(third, {429})  # --max-inflight is far away
        assert_timed_out(held)
    finally:
        for connection in held:
            connection.close()
    assert_serving(capped, BEARER)


def test_bodies_are_not_allocated_from_their_content_length(tmp_path):
    """With limits that admit all of them, 32 requests declaring 32 MiB each (one byte sent)
    must not cost the server 1 GiB: the body buffer grows as bytes arrive."""
    declared = 32 * MiB
    with run_server(penguins_only(tmp_path), tmp_path, "--max-request-bytes", str(declared),
                    "--http-body-buffer-bytes", str(64 * declared), "--max-inflight", "64",
                    "--http-body-timeout", str(BODY_TIMEOUT), "--http-max-connections", "64",
                    ) as server:
        assert_serving(server)
        before = server_rss(server)
        peak = [before]
        held = hold_bodies(server, 32, declared)
        try:
            answers = wait_for_answers(
                held, BODY_TIMEOUT + SLACK, lambda: peak.append(server_rss(server)))
            statuses = [answer.status for c in held for answer in answers[c]]
            assert statuses == [408] * 32 and all(c.eof for c in held), statuses
        finally:
            for connection in held:
                connection.close()
        assert max(peak) < before + 100 * MiB, \
            f"RSS grew by {(max(peak) - before) / MiB:.0f} MiB"
        assert_serving(server)


def test_a_request_in_progress_outlives_the_idle_timeout(tmp_path):
    """Idle means no request in progress: an answer that takes longer than the idle timeout
    (a lone request held in its model's queue) still arrives, and the connection is closed
    only after it, once idle for the timeout."""
    repository = penguins_only(tmp_path)
    held_for = 2.5
    hold_lone_requests(repository / "penguins", delay_us=int(held_for * 1e6))
    with run_server(repository, tmp_path, "--http-idle-timeout", "1",
                    "--http-header-timeout", "1", "--http-body-timeout", "1") as server:
        with Connection(server.http_url) as connection:
            connection.send(infer())
            answer = connection.response(timeout=held_for + SLACK)
            assert answer.status == 200 and not answer.announces_close, str(answer)
            assert answer.arrived - connection.opened >= EARLY * held_for
            connection.assert_closed(timeout=1 + SLACK)
            assert EARLY * 1 <= connection.eof_at - answer.arrived <= 1 + SLACK

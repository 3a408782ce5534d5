"""Hostile HTTP clients that need many connections at once, or settings of their own, against
a real `zooserve serve` over plain sockets: max-inflight and the shared body buffer checked
before a body arrives, declared bodies that cost no memory, slow heads and idle connections
closed while others are served, a connection cap, a bearer token and a queue limit checked
before the body, and a request in progress outliving the idle timeout. The table of single
hostile requests is in tests/test_hostile_http.py."""

from __future__ import annotations

import select
import selectors
import time

import psutil
import pytest

from tests.helpers.hostile import (
    BODY_BUFFER_BYTES,
    BODY_TIMEOUT,
    EARLY,
    HEADER_TIMEOUT,
    IDLE_TIMEOUT,
    MAX_INFLIGHT,
    MAX_REQUEST_BYTES,
    SLACK,
    SMUGGLED,
    TE_CHUNKED,
    TOKEN,
    MiB,
    assert_refused_and_closed,
    assert_serving,
    head,
    infer,
    penguins_only,
)
from tests.helpers.raw_http import Connection, Response, chunk, exchange, request
from tests.helpers.server import RunningServer, hold_lone_requests, run_server

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

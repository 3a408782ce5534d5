"""What the hostile-HTTP tests share: a server with short limits, requests built by hand, and
the checks that the server still serves and that a refusal closes its connection."""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.paths import MODELS
from tests.helpers.raw_http import Connection, Response, exchange, request
from tests.helpers.server import RunningServer, run_server

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
TE_CHUNKED = ("Transfer-Encoding", "chunked")
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


@contextlib.contextmanager
def run_hostile_server(tmp: Path) -> Iterator[RunningServer]:
    """`zooserve serve` on penguins with the short limits above, answering when yielded."""
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

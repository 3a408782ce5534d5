"""A corpus of malformed requests over HTTP (the KServe v2 REST paths) against one real
server: each row names the status it must get (never 500) and a fragment its error must hold,
and after each a good request must still be answered. Error bodies stay small
(zooserve/protocol/limits.py). The gRPC corpus is in tests/test_malformed_requests.py."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from tests.helpers.echo_repository import echo_model
from tests.helpers.penguin_rows import LABELS, one_of_each

# An error body stays small, whatever the client sent.
MAX_MESSAGE = 600


@pytest.fixture(scope="module")
def http(echo_zoo_server):
    with httpx.Client(base_url=echo_zoo_server.http_url, timeout=30) as client:
        yield client


def tensor(data, shape=(1, 4), datatype="FP32", name="features", **extra) -> dict:
    return {"name": name, "datatype": datatype, "shape": list(shape), "data": data, **extra}


def body(*tensors, **extra) -> dict:
    return {"inputs": list(tensors or [tensor([1, 2, 3, 4])]), **extra}


def echo(datatype: str, data: object) -> tuple[str, str, object]:
    return ("POST", f"/v2/models/{echo_model(datatype)}/infer",
            body(tensor(data, shape=(1, 2), datatype=datatype, name="value")))


def nested(depth: int) -> object:
    value: object = 1.0
    for _ in range(depth):
        value = [value]
    return value


INFER = "/v2/models/penguins/infer"

# (method, path, JSON body or raw bytes, expected status, fragment of the error)
HTTP_CORPUS: dict[str, tuple[str, str, object, int, str]] = {
    # names and versions in the path
    "unknown model": ("GET", "/v2/models/dolphins", None, 404, "'dolphins' not found"),
    "version '²'": ("GET", "/v2/models/penguins/versions/²", None, 404, "no version '²'"),
    "Arabic-Indic version": ("GET", "/v2/models/penguins/versions/١", None, 404,
                             "no version '١'"),
    "100-digit version": ("GET", "/v2/models/penguins/versions/" + "9" * 100, None, 404,
                          "(100 characters)"),
    "leading zero": ("GET", "/v2/models/penguins/versions/01", None, 404, "no version '01'"),
    "10 KB model name": ("GET", "/v2/models/" + "x" * 10_000, None, 404,
                         "(10000 characters) not found"),
    "newline in the name": ("GET", "/v2/models/pen%0Aguins", None, 404,
                            "model 'pen\\\\nguins' not found"),
    "ready: version '²'": ("GET", "/v2/models/penguins/versions/²/ready", None, 404,
                           "no version '²'"),
    "ready: version 99": ("GET", "/v2/models/penguins/versions/99/ready", None, 404,
                          "no version '99'"),
    "infer: unknown model": ("POST", "/v2/models/dolphins/infer", body(), 404,
                             "'dolphins' not found"),
    "infer: version '²'": ("POST", "/v2/models/penguins/versions/²/infer", body(), 404,
                           "no version '²'"),
    "infer: 100-digit version": ("POST", "/v2/models/penguins/versions/" + "9" * 100 + "/infer",
                                 body(), 404, "(100 characters)"),
    # the body
    "not JSON": ("POST", INFER, b"{nope", 400, "not JSON"),
    "not UTF-8": ("POST", INFER, b'{"inputs": "\xff"}', 400, "not JSON"),
    "a JSON array": ("POST", INFER, [1, 2], 400, "must be a JSON object"),
    "no inputs": ("POST", INFER, {}, 400, '\\"inputs\\" must be a list'),
    "inputs an object": ("POST", INFER, {"inputs": {}}, 400, '\\"inputs\\" must be a list'),
    "input a number": ("POST", INFER, {"inputs": [1]}, 400, "each input must be an object"),
    "input without a name": ("POST", INFER, body({"datatype": "FP32"}), 400,
                             'has no \\"name\\"'),
    "input without datatype": ("POST", INFER, body({"name": "features", "shape": [1, 4],
                                                    "data": [1, 2, 3, 4]}),
                               400, 'has no \\"datatype\\"'),
    "datatype a number": ("POST", INFER, body(tensor([1, 2, 3, 4], datatype=32)), 400,
                          '\\"datatype\\" must be a string'),
    "shape a string": ("POST", INFER, body(tensor([1, 2, 3, 4], shape="1,4")), 400,
                       '\\"shape\\" must be a list of integers'),
    "boolean in the shape": ("POST", INFER, body(tensor([1, 2, 3, 4], shape=[True, 4])), 400,
                             '\\"shape\\" must be a list of integers'),
    "float in the shape": ("POST", INFER, body(tensor([1, 2, 3, 4], shape=[1.0, 4])), 400,
                           '\\"shape\\" must be a list of integers'),
    "rank 40": ("POST", INFER, body(tensor([1], shape=[1] * 40)), 400, "40 axes"),
    "rank 70": ("POST", INFER, body(tensor([1], shape=[1] * 70)), 400, "70 axes"),
    "dimension of 10**30": ("POST", INFER, body(tensor([1], shape=[10**30, 4])), 400,
                            "more elements than the limit of 268435456"),
    "negative dimension": ("POST", INFER, body(tensor([1, 2, 3, 4], shape=[-1, 4])), 400,
                           "negative dimension"),
    "wrong input name": ("POST", INFER, body(tensor([1, 2, 3, 4], name="bill")), 400,
                         "has no input 'bill'"),
    "wrong datatype": ("POST", INFER, body(tensor([1, 2, 3, 4], datatype="FP64")), 400,
                       "datatype FP64 given"),
    "unknown datatype": ("POST", INFER, body(tensor([1, 2, 3, 4], datatype="float")), 400,
                         "datatype 'float' given"),
    "wrong element count": ("POST", INFER, body(tensor([1, 2, 3])), 400,
                            "3 elements given, but shape [1, 4] needs 4"),
    "ragged nesting": ("POST", INFER, body(tensor([[1, 2], [3]])), 400, "ragged"),
    "data nested 40 deep": ("POST", INFER, body(tensor(nested(40))), 400, "nested"),
    "boolean for FP32": ("POST", INFER, body(tensor([True, 2, 3, 4])), 400,
                         "element 0 is a boolean"),
    "text for FP32": ("POST", INFER, body(tensor(["1", 2, 3, 4])), 400, "element 0 is the text"),
    "null for FP32": ("POST", INFER, body(tensor([1, None, 3, 4])), 400, "element 1 is null"),
    "object for FP32": ("POST", INFER, body(tensor([1, 2, {}, 4])), 400, "element 2 is dict"),
    "1e39 for FP32": ("POST", INFER, body(tensor([1e39, 2, 3, 4])), 400,
                      "element 0 (1e+39) is out of the range of FP32"),
    "10**400 for FP32": ("POST", INFER, body(tensor([10**400, 2, 3, 4])), 400,
                         "out of the range of FP32"),
    "FP16 70000": echo("FP16", [70000.0, 1]) + (400, "out of the range of FP16"),
    "INT8 128": echo("INT8", [128, 1]) + (400, "element 0 (128) is out of the range of INT8"),
    "INT8 1.5": echo("INT8", [1, 1.5]) + (400, "element 1 is the number 1.5"),
    "INT16 -40000": echo("INT16", [-40000, 1]) + (400, "out of the range of INT16"),
    "INT32 2**31": echo("INT32", [2**31, 1]) + (400, "out of the range of INT32"),
    "INT64 2**63": echo("INT64", [2**63, 1]) + (400, "out of the range of INT64"),
    "INT64 true": echo("INT64", [True, 1]) + (400, "element 0 is a boolean"),
    "UINT8 -1": echo("UINT8", [-1, 1]) + (400, "element 0 (-1) is out of the range of UINT8"),
    "UINT32 2**32": echo("UINT32", [2**32, 1]) + (400, "out of the range of UINT32"),
    "UINT64 2**64": echo("UINT64", [2**64, 1]) + (400, "out of the range of UINT64"),
    "BOOL 2": echo("BOOL", [True, 2]) + (400, "element 1 is the number 2"),
    "BOOL 'true'": echo("BOOL", ["true", False]) + (400, "BOOL elements are true or false"),
    "BYTES a number": echo("BYTES", ["a", 1]) + (400, "BYTES elements are text"),
    "INT8 NaN": ("POST", f"/v2/models/{echo_model('INT8')}/infer",
                 b'{"inputs": [{"name": "value", "datatype": "INT8", "shape": [1, 2], '
                 b'"data": [NaN, 1]}]}', 400, "element 0 is the number nan"),
    "id an object": ("POST", INFER, body(id={"a": 1}), 400, '\\"id\\" must be a string'),
    "id of 2000 characters": ("POST", INFER, body(id="i" * 2000), 400,
                              '\\"id\\" of 2000 characters; at most 1024'),
    "parameters a number": ("POST", INFER, body(parameters=5), 400,
                            '\\"parameters\\" must be an object'),
    "parameter an object": ("POST", INFER, body(parameters={"priority": {"x": 1}}), 400,
                            "parameter 'priority' must be a string, number or boolean"),
    "outputs an object": ("POST", INFER, body(outputs={"name": "probabilities"}), 400,
                          '\\"outputs\\" must be a list'),
    "output without a name": ("POST", INFER, body(outputs=[{}]), 400,
                              '\\"outputs\\" must be a list'),
    "unknown output": ("POST", INFER, body(outputs=[{"name": "logits"}]), 400,
                       "no output 'logits'"),
    "input twice": ("POST", INFER, body(tensor([1, 2, 3, 4]), tensor([1, 2, 3, 4])), 400,
                    "'features' appears more than once"),
    # The body over --max-request-bytes is not a row here: the server answers 413 and closes
    # before reading the body, and a client still sending can then see a reset instead of the
    # answer; tests/test_tritonclient_http.py sends it from a raw socket that waits.
    "GET on infer": ("GET", INFER, None, 405, "'GET' is not allowed"),
    "JSON nested 100,000 deep": ("POST", INFER, b'{"inputs": ' + b"[" * 100_000
                                 + b"]" * 100_000 + b"}", 400, "nested too deeply"),
    "a 5,000-digit integer": ("POST", INFER, b'{"inputs": [{"name": "features", "datatype": '
                              b'"FP32", "shape": [1, 4], "data": [' + b"9" * 5000
                              + b', 1, 2, 3]}]}', 400, "cannot be read"),
    "1e400": ("POST", INFER, b'{"inputs": [{"name": "features", "datatype": "FP32", "shape": '
              b'[1, 4], "data": [1e400, 1, 2, 3]}]}', 400, "1e400 is out of range"),
    "index: nested 100,000 deep": ("POST", "/v2/repository/index", b"[" * 100_000
                                   + b"]" * 100_000, 400, "nested too deeply"),
    "one of two inputs": ("POST", "/v2/models/spectra_similarity/infer",
                          body(tensor([0.0] * 200, shape=[1, 200], name="spectrum_a")), 400,
                          "input 'spectrum_b' is missing"),
}


def send(http: httpx.Client, method: str, path: str, payload: object) -> httpx.Response:
    if method == "GET":
        return http.get(path)
    if callable(payload):  # built when sent: a large body is not held for the whole run
        payload = payload()
    if isinstance(payload, bytes):
        return http.post(path, content=payload, headers={"Content-Type": "application/json"})
    return http.post(path, json=payload)


def good_http(http: httpx.Client) -> None:
    features, species = one_of_each()
    response = http.post(INFER, json=body(tensor(features.ravel().tolist(), shape=[3, 4])))
    assert response.status_code == 200, response.text
    probabilities = np.asarray(response.json()["outputs"][0]["data"]).reshape(3, 3)
    assert [LABELS[i] for i in probabilities.argmax(axis=1)] == species


def test_the_http_corpus_is_large():
    assert len(HTTP_CORPUS) >= 40


@pytest.mark.parametrize("case", list(HTTP_CORPUS))
def test_malformed_http_request(http, case):
    method, path, payload, status, fragment = HTTP_CORPUS[case]
    response = send(http, method, path, payload)
    assert response.status_code == status, response.text[:500]
    assert fragment in response.text, (fragment, response.text[:500])
    assert len(response.text) <= MAX_MESSAGE, len(response.text)
    good_http(http)


def test_non_finite_floats_travel_as_text_in_strict_json(http):
    """JSON has no NaN: float elements that are not finite are "NaN", "Infinity" and
    "-Infinity" both ways (Python's NaN literals are read too), and the response is strict
    JSON a parser without extensions reads."""
    payload = body(tensor(["NaN", "Infinity"], shape=(1, 2), name="value"))
    payload["inputs"][0]["datatype"] = "FP32"
    response = http.post(f"/v2/models/{echo_model('FP32')}/infer", json=payload)
    assert response.status_code == 200, response.text

    def refuse(constant):
        raise ValueError(f"non-strict JSON constant {constant}")

    (output,) = json.loads(response.text, parse_constant=refuse)["outputs"]
    assert output["data"] == ["NaN", "Infinity"]
    assert np.isnan(np.asarray(output["data"], dtype=np.float32)[0])

    literal = (b'{"inputs": [{"name": "value", "datatype": "FP64", "shape": [1, 2], '
               b'"data": [-Infinity, 1.5]}]}')
    response = send(http, "POST", f"/v2/models/{echo_model('FP64')}/infer", literal)
    assert response.status_code == 200, response.text
    assert json.loads(response.text, parse_constant=refuse)["outputs"][0]["data"] == [
        "-Infinity", 1.5]

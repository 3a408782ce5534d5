"""Triton's own HTTP client against `zooserve serve`'s HTTP port (real server processes, real
clients): tritonclient.http with its defaults (the binary tensor data extension both ways),
and without it; its model-config, statistics and repository-index calls; request and response
compression; the request-size limit (413); and JSON for a path or method the server does not
answer. Malformed binary requests and BYTES tensors are in tests/test_http_binary.py."""

from __future__ import annotations

import gzip
import json
import socket
import subprocess
import sys

import httpx
import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers.binary_requests import assert_still_serving
from tests.helpers.paths import MODELS, ROOT
from tests.helpers.penguin_rows import LABELS, one_of_each
from tests.helpers.server import run_server

ZOO = sorted(p.name for p in MODELS.iterdir() if p.is_dir())


def _host(url: str) -> str:
    return url.removeprefix("http://")


@pytest.fixture(scope="module")
def client(server):
    with httpclient.InferenceServerClient(_host(server.http_url)) as triton_http:
        yield triton_http


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.http_url, timeout=30) as plain:
        yield plain


def _input(name: str, array: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput(name, list(array.shape), "FP32")
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def _json_infer(http: httpx.Client, model: str, inputs: dict[str, np.ndarray]) -> dict:
    """The same request as plain KServe v2 JSON, outputs by name."""
    body = {"inputs": [{"name": n, "datatype": "FP32", "shape": list(a.shape),
                        "data": a.ravel().tolist()} for n, a in inputs.items()]}
    response = http.post(f"/v2/models/{model}/infer", json=body)
    assert response.status_code == 200, response.text
    return {o["name"]: np.asarray(o["data"], np.float32).reshape(o["shape"])
            for o in response.json()["outputs"]}


def _digits(rows: int) -> np.ndarray:
    return np.random.default_rng(7).uniform(0, 255, (rows, 28, 28, 1)).astype(np.float32)


# the client's own calls


def test_the_client_finds_the_server_and_its_extensions(client):
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("penguins")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "zooserve"
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(
        metadata["extensions"])
    assert client.get_model_metadata("digits")["inputs"][0]["name"] == "image"


def test_penguins_with_the_clients_defaults_travel_as_binary(client, http):
    features, species = one_of_each()
    result = client.infer("penguins", [_input("features", features)], request_id="p1")
    response = result.get_response()
    (output,) = response["outputs"]
    assert response["id"] == "p1"
    assert output["parameters"] == {"binary_data_size": features.shape[0] * 3 * 4}
    assert "data" not in output
    probabilities = result.as_numpy("probabilities")
    assert [LABELS[i] for i in probabilities.argmax(axis=1)] == species
    over_json = _json_infer(http, "penguins", {"features": features})["probabilities"]
    np.testing.assert_array_equal(probabilities, over_json)


def test_digits_with_the_clients_defaults_match_grpc(client, triton):
    import tritonclient.grpc as grpcclient

    images = _digits(16)
    result = client.infer("digits", [_input("image", images)])
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (16, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, rtol=1e-5)
    tensor = grpcclient.InferInput("image", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    np.testing.assert_array_equal(probabilities,
                                  triton.infer("digits", [tensor]).as_numpy("probabilities"))


def test_without_binary_data_everything_is_json(client, http):
    features, species = one_of_each()
    requested = httpclient.InferRequestedOutput("probabilities", binary_data=False)
    result = client.infer("penguins", [_input("features", features, binary=False)],
                          outputs=[requested])
    (output,) = result.get_response()["outputs"]
    assert "parameters" not in output and len(output["data"]) == features.shape[0] * 3
    probabilities = result.as_numpy("probabilities")
    assert [LABELS[i] for i in probabilities.argmax(axis=1)] == species
    binary = client.infer("penguins", [_input("features", features)]).as_numpy("probabilities")
    np.testing.assert_array_equal(probabilities, binary)


def test_binary_and_json_inputs_mix_in_one_request(client, http):
    rng = np.random.default_rng(3)
    a, b = (rng.uniform(0, 1, (4, 200)).astype(np.float32) for _ in range(2))
    result = client.infer("spectra_similarity",
                          [_input("spectrum_a", a), _input("spectrum_b", b, binary=False)])
    expected = _json_infer(http, "spectra_similarity", {"spectrum_a": a, "spectrum_b": b})
    np.testing.assert_array_equal(result.as_numpy("similarity"), expected["similarity"])


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_and_responses(client, algorithm):
    images = _digits(32)
    plain = client.infer("digits", [_input("image", images)]).as_numpy("probabilities")
    packed = client.infer("digits", [_input("image", images)],
                          request_compression_algorithm=algorithm,
                          response_compression_algorithm=algorithm)
    np.testing.assert_array_equal(packed.as_numpy("probabilities"), plain)


def test_a_response_is_compressed_only_when_asked(http):
    images = _digits(32)
    body = {"inputs": [{"name": "image", "datatype": "FP32", "shape": list(images.shape),
                        "data": images.ravel().tolist()}]}
    for coding in ("gzip", "deflate"):
        asked = http.post("/v2/models/digits/infer", json=body,
                          headers={"Accept-Encoding": coding})
        assert asked.status_code == 200 and asked.headers["content-encoding"] == coding
        assert len(asked.json()["outputs"][0]["data"]) == 320  # httpx inflated it
    unasked = http.post("/v2/models/digits/infer", json=body,
                        headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in unasked.headers
    assert unasked.json()["outputs"] == asked.json()["outputs"]


def _without_defaults(value, int64_keys=("dims", "max_queue_delay_microseconds")):
    """A config as protobuf's JSON printer writes it (what tritonclient.grpc's as_json gives):
    fields at their default left out, 64-bit integers as strings."""
    if isinstance(value, dict):
        kept = {}
        for key, item in value.items():
            item = _without_defaults(item)
            if key in int64_keys:
                item = [str(i) for i in item] if isinstance(item, list) else str(item)
            if item in (0, "", [], "0", False):
                continue
            kept[key] = item
        return kept
    if isinstance(value, list):
        return [_without_defaults(v) for v in value]
    return value


@pytest.mark.parametrize("name", ZOO)
def test_model_config_over_http_is_the_grpc_one(client, triton, name):
    over_http = client.get_model_config(name)
    # A library is searched by zooserve itself (its embedding model runs in ONNX Runtime).
    backend = "zooserve" if name == "spectra_search" else "onnxruntime"
    assert over_http["name"] == name and over_http["backend"] == backend
    assert isinstance(over_http["max_batch_size"], int)  # Triton's examples read it
    assert all(isinstance(d, int) for t in over_http["input"] for d in t["dims"])
    over_grpc = triton.get_model_config(name, as_json=True)["config"]
    assert _without_defaults(over_http) == over_grpc
    assert client.get_model_config(name, model_version="1") == over_http


def test_penguins_config_has_its_labels(client):
    config = client.get_model_config("penguins")
    assert json.loads(config["parameters"]["labels"]["string_value"]) == LABELS
    assert config["input"] == [{"name": "features", "data_type": "TYPE_FP32", "dims": [4]}]


def test_statistics_count_http_requests(client):
    def weather() -> dict:
        (row,) = client.get_inference_statistics("weather")["model_stats"]
        return row

    before = weather()
    client.infer("weather", [_input("features", np.full((3, 15), 0.5, np.float32))])
    after = weather()
    assert after["name"] == "weather" and after["version"] == "1"
    assert after["inference_stats"]["success"]["count"] == (
        before["inference_stats"]["success"]["count"] + 1)
    assert after["inference_count"] >= before["inference_count"] + 3
    assert after["last_inference"] > 0 and after["batch_stats"]
    for key in ("fail", "queue", "compute_input", "compute_infer", "compute_output",
                "cache_hit", "cache_miss"):
        assert set(after["inference_stats"][key]) == {"count", "ns"}
    (versioned,) = client.get_inference_statistics("weather", "1")["model_stats"]
    assert (versioned["name"], versioned["version"]) == ("weather", "1")
    every = client.get_inference_statistics()["model_stats"]
    assert sorted(row["name"] for row in every) == ZOO
    with pytest.raises(InferenceServerException) as missing:
        client.get_inference_statistics("dolphins")
    assert missing.value.status() == "404" and "dolphins" in missing.value.message()


def test_repository_index(client, http):
    index = client.get_model_repository_index()
    assert sorted(row["name"] for row in index) == ZOO
    assert all(row["state"] == "READY" and row["version"] == "1" for row in index)
    assert set(index[0]) == {"name", "version", "state", "reason"}
    ready = http.post("/v2/repository/index", json={"ready": True})
    assert ready.status_code == 200 and ready.json() == index
    wrong = http.post("/v2/repository/index", json={"ready": "yes"})
    assert wrong.status_code == 400 and '"ready"' in wrong.json()["error"]


def test_tritonclient_http_and_the_http_frontend_load_no_protobuf_modules():
    """The HTTP frontend must not need the gRPC frontend's generated modules (an HTTP-only
    process stays light), nor tritonclient.http them."""
    code = ("import sys, tritonclient.http, zooserve.serving.http_frontend.rest, "
            "zooserve.serving.http_frontend.server\n"
            "bad = [m for m in sys.modules if m.startswith(('zooserve.serving.grpc_frontend', "
            "'tritonclient.grpc')) or m.endswith('_pb2')]\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


# the request-size limit


def _raw_http(url: str, head: bytes, chunks: list[bytes] = ()) -> tuple[int, dict]:
    """Send a request by hand (the body in `chunks`, as much as the server takes) and read
    the answer; (status, JSON body)."""
    host, port = _host(url).split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(head)
        for chunk in chunks:
            try:
                sock.sendall(chunk)
            except OSError:  # the server answered and closed without reading the rest
                break
        data = b""
        while True:
            try:
                piece = sock.recv(65536)
            except OSError:
                break
            if not piece:
                break
            data += piece
    status_line, _, rest = data.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), json.loads(body)


def test_a_declared_length_over_the_limit_is_413_before_the_body(server, http):
    head = (b"POST /v2/models/penguins/infer HTTP/1.1\r\nHost: zoo\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000000000000\r\n\r\n")
    status, body = _raw_http(server.http_url, head)  # no byte of the body is ever sent
    assert status == 413
    assert "max_request_bytes" in body["error"] and str(64 * 1024 * 1024) in body["error"]
    assert_still_serving(http)


LIMIT = 1024 * 1024


@pytest.fixture(scope="module")
def small_limit(tmp_path_factory):
    with run_server(MODELS, tmp_path_factory.mktemp("limit"),
                    "--max-request-bytes", str(LIMIT)) as running:
        with httpx.Client(base_url=running.http_url, timeout=30) as plain:
            yield running, plain


def _chunked(total: int, piece: int = 64 * 1024) -> list[bytes]:
    pieces = [b"%x\r\n" % piece + b" " * piece + b"\r\n"] * (total // piece)
    return pieces + [b"0\r\n\r\n"]


@pytest.mark.parametrize("path", ["/v2/models/penguins/infer", "/v2/repository/index"])
def test_a_chunked_body_over_the_limit_is_413(small_limit, path):
    running, plain = small_limit
    head = (f"POST {path} HTTP/1.1\r\nHost: zoo\r\nContent-Type: application/json\r\n"
            "Transfer-Encoding: chunked\r\n\r\n").encode()
    status, body = _raw_http(running.http_url, head, _chunked(LIMIT + 128 * 1024))
    assert status == 413, body
    assert "max_request_bytes" in body["error"] and str(LIMIT) in body["error"]
    assert_still_serving(plain)


def test_the_limit_holds_for_declared_and_decompressed_sizes(small_limit):
    running, plain = small_limit
    head = (f"POST /v2/models/penguins/infer HTTP/1.1\r\nHost: zoo\r\n"
            f"Content-Length: {LIMIT + 1}\r\n\r\n").encode()
    status, body = _raw_http(running.http_url, head)  # one byte over, none of it sent
    assert status == 413 and str(LIMIT) in body["error"]
    bomb = gzip.compress(b" " * (4 * LIMIT))  # 4 KiB on the wire, 4 MiB inflated
    inflated = plain.post("/v2/models/penguins/infer", content=bomb,
                          headers={"Content-Encoding": "gzip"})
    assert inflated.status_code == 413 and "decompressed" in inflated.json()["error"]
    # under the limit, binary and compressed, it serves
    images = _digits(64)  # 200 KiB of pixels
    with httpclient.InferenceServerClient(_host(running.http_url)) as small:
        result = small.infer("digits", [_input("image", images)],
                             request_compression_algorithm="gzip")
    assert result.as_numpy("probabilities").shape == (64, 10)


# paths and methods the server does not answer


@pytest.mark.parametrize(("method", "path", "status"), [
    ("GET", "/v2/nothing/here", 404),
    ("GET", "/", 404),
    ("DELETE", "/v2/models/penguins", 405),
    ("GET", "/v2/models/penguins/infer", 405),
    ("POST", "/v2/models/stats", 405),
    ("GET", "/v2/repository/index", 405),
    ("GET", "/v2/models/dolphins/config", 404),
    ("GET", "/v2/models/penguins/versions/7/stats", 404),
])
def test_unknown_paths_and_methods_answer_json(http, method, path, status):
    answer = http.request(method, path)
    assert answer.status_code == status
    assert answer.headers["content-type"] == "application/json"
    assert answer.json()["error"]
    if status == 405:
        assert method in answer.json()["error"] and "allow" in answer.headers

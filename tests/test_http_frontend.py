"""`zooserve serve`'s HTTP port: the KServe v2 REST paths, over the same DataPlane as gRPC
(real server process, real HTTP client, tritonclient on the gRPC side)."""

from __future__ import annotations

import socket
import subprocess
import sys

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.helpers.paths import MODELS, ROOT
from tests.helpers.penguin_rows import LABELS, one_of_each
from tests.helpers.server import free_port


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.http_url, timeout=10) as client:
        yield client


def test_health_and_server_metadata(http):
    assert http.get("/v2/health/live").json() == {"live": True}
    ready = http.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    assert http.get("/v2").json()["name"] == "zooserve"
    assert http.get("/v2/models/penguins/ready").status_code == 200


def test_infer_over_http_gives_what_grpc_gives(http, triton):
    features, species = one_of_each()
    body = {"id": "h1", "inputs": [{"name": "features", "datatype": "FP32",
                                    "shape": list(features.shape),
                                    "data": features.ravel().tolist()}]}
    response = http.post("/v2/models/penguins/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert response.json()["id"] == "h1" and output["name"] == "probabilities"
    over_http = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])

    tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features)
    over_grpc = triton.infer("penguins", [tensor]).as_numpy("probabilities")
    np.testing.assert_allclose(over_http, over_grpc, rtol=1e-6)
    assert [LABELS[i] for i in over_http.argmax(axis=1)] == species


def test_client_mistakes_are_4xx_and_the_server_keeps_serving(http):
    missing = http.post("/v2/models/dolphins/infer", json={"inputs": []})
    assert missing.status_code == 404 and "dolphins" in missing.json()["error"]
    broken = http.post("/v2/models/penguins/infer", content=b"{nope",
                       headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and "not JSON" in broken.json()["error"]
    wrong = http.post("/v2/models/penguins/infer", json={"inputs": [
        {"name": "features", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]})
    assert wrong.status_code == 400 and "features" in wrong.json()["error"]
    assert http.get("/v2/health/ready").status_code == 200


def test_http_requests_count_in_the_same_statistics_as_grpc(http, triton):
    def successes() -> int:
        stats = triton.get_inference_statistics("weather", as_json=True)
        return int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0))

    before = successes()
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [2, 15],
                        "data": [0.5] * 30}]}
    assert http.post("/v2/models/weather/infer", json=body).status_code == 200
    assert successes() == before + 1


def test_a_taken_http_port_is_one_line_and_no_server():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "zooserve", "serve", "--models", str(MODELS),
             "--host", "127.0.0.1", "--grpc-port", str(free_port()),
             "--metrics-port", str(free_port()), "--http-port", str(port)],
            capture_output=True, text=True, cwd=ROOT, timeout=60,
        )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("zooserve serve: error: cannot listen for HTTP")
    assert str(port) in last and "Traceback" not in done.stderr

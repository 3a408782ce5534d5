"""SIGTERM on a real `zooserve serve`: the request in flight is answered, and while it runs
the server says it is going (health NOT_SERVING, ServerReady false, HTTP ready 503) and
refuses new work with UNAVAILABLE; then it exits 0 and logs what it answered."""

from __future__ import annotations

import re
import signal
import threading
import time

import grpc
import httpx
import numpy as np
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.conftest import MODELS, run_server

BIG_BATCH = 8192  # digits images: long enough (seconds on 2 cores) to watch the drain


def test_sigterm_answers_the_request_in_flight_and_refuses_new_ones(tmp_path):
    images = np.random.default_rng(3).random((BIG_BATCH, 28, 28, 1), dtype=np.float32)
    small = np.zeros((1, 28, 28, 1), dtype=np.float32)
    result: dict[str, object] = {}
    with run_server(MODELS, tmp_path, "--max-batch-size", str(BIG_BATCH)) as server:
        client = grpcclient.InferenceServerClient(server.url)

        def big_request() -> None:
            tensor = grpcclient.InferInput("image", list(images.shape), "FP32")
            tensor.set_data_from_numpy(images)
            try:
                result["answer"] = client.infer("digits", [tensor], client_timeout=120)
            except InferenceServerException as exc:
                result["error"] = exc

        worker = threading.Thread(target=big_request)
        worker.start()
        time.sleep(1.0)  # the request is on its way in and running
        server.process.send_signal(signal.SIGTERM)

        with grpc.insecure_channel(server.url) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 10
            status = None
            while time.monotonic() < deadline:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                time.sleep(0.02)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert worker.is_alive(), "the batch finished before the drain could be watched"
        assert client.is_server_ready() is False
        assert httpx.get(f"{server.http_url}/v2/health/ready", timeout=5).status_code == 503
        tensor = grpcclient.InferInput("image", [1, 28, 28, 1], "FP32")
        tensor.set_data_from_numpy(small)
        try:
            client.infer("digits", [tensor])
            raise AssertionError("a new request was taken on while draining")
        except InferenceServerException as exc:
            assert exc.status() == "StatusCode.UNAVAILABLE" and "shutting down" in exc.message()

        worker.join(timeout=120)
        assert "error" not in result, result.get("error")
        answer = result["answer"].as_numpy("probabilities")
        assert answer.shape == (BIG_BATCH, 10)
        assert server.process.wait(timeout=30) == 0
        log = server.log()
        client.close()
    found = re.search(r"drained: (\d+) inference requests accepted, (\d+) answered, "
                      r"(\d+) refused", log)
    assert found, log
    assert found.groups() == ("1", "1", "1")

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
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers.paths import MODELS
from tests.helpers.server import hold_lone_requests, run_server


def _image_input(image: np.ndarray) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("image", list(image.shape), "FP32")
    tensor.set_data_from_numpy(image)
    return tensor


@pytest.mark.slow  # a drain of several seconds
def test_sigterm_answers_the_request_in_flight_and_refuses_new_ones(tmp_path, copy_model):
    repo = copy_model("digits")
    hold_lone_requests(repo / "digits")  # in flight while the drain is watched
    image = np.random.default_rng(3).random((1, 28, 28, 1), dtype=np.float32)
    result: dict[str, object] = {}
    with run_server(repo, tmp_path) as server:
        client = grpcclient.InferenceServerClient(server.url)

        def held_request() -> None:
            try:
                result["answer"] = client.infer("digits", [_image_input(image)],
                                                client_timeout=120)
            except InferenceServerException as exc:
                result["error"] = exc

        worker = threading.Thread(target=held_request)
        worker.start()
        server.wait_for_in_flight("digits")  # taken on, waiting in the queue
        server.process.send_signal(signal.SIGTERM)

        with grpc.insecure_channel(server.url) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 10
            status = None
            while time.monotonic() < deadline:
                status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
                if status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break
                time.sleep(0.02)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert worker.is_alive(), "the request was answered before the drain could be watched"
        assert client.is_server_ready() is False
        assert httpx.get(f"{server.http_url}/v2/health/ready", timeout=5).status_code == 503
        try:
            client.infer("digits", [_image_input(image)])
            raise AssertionError("a new request was taken on while draining")
        except InferenceServerException as exc:
            assert exc.status() == "StatusCode.UNAVAILABLE" and "shutting down" in exc.message()

        worker.join(timeout=120)
        assert "error" not in result, result.get("error")
        assert result["answer"].as_numpy("probabilities").shape == (1, 10)
        assert server.process.wait(timeout=30) == 0
        log = server.log()
        client.close()
    found = re.search(r"drained: (\d+) inference requests accepted, (\d+) answered, "
                      r"(\d+) refused", log)
    assert found, log
    assert found.groups() == ("1", "1", "1")


@pytest.mark.slow  # a drain of several seconds
def test_under_load_every_request_sent_before_sigterm_is_answered(tmp_path):
    """32 clients keep penguins busy; SIGTERM with a 3 s drain delay. Every request sent
    before the signal gets OK; once health reads NOT_SERVING requests are still answered;
    then new ones are refused UNAVAILABLE, never one answered after a refusal, and the
    server exits 0. Judged by the order of events, not by how long anything took."""
    features = np.asarray([[39.1, 18.7, 181.0, 3750.0]], dtype=np.float32)
    records: list[tuple[float, float, str]] = []  # (sent, answered, status) per request
    lock = threading.Lock()
    stop = threading.Event()
    with run_server(MODELS, tmp_path, env={"ZOOSERVE_DRAIN_DELAY": "3"}) as server:

        def client_loop() -> None:
            client = grpcclient.InferenceServerClient(server.url)
            tensor = grpcclient.InferInput("features", [1, 4], "FP32")
            tensor.set_data_from_numpy(features)
            while not stop.is_set():
                sent = time.monotonic()
                try:
                    client.infer("penguins", [tensor], client_timeout=30)
                    status = "OK"
                except InferenceServerException as exc:
                    status = exc.status() or "no status"
                with lock:
                    records.append((sent, time.monotonic(), status))
                if status != "OK":
                    time.sleep(0.05)
            client.close()

        threads = [threading.Thread(target=client_loop) for _ in range(32)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(records) < 3 * len(threads):  # every client is in its loop
            assert time.monotonic() < deadline, f"only {len(records)} answers in 60 s"
            time.sleep(0.02)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        with grpc.insecure_channel(server.url) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
            while status != health_pb2.HealthCheckResponse.NOT_SERVING:
                assert time.monotonic() < signalled + 10, "still SERVING 10 s after SIGTERM"
                status = health.Check(health_pb2.HealthCheckRequest(service=""),
                                      timeout=10).status
        not_serving_seen = time.monotonic()
        assert server.process.wait(timeout=60) == 0
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        log = server.log()
    before = [r for r in records if r[0] < signalled]
    in_flight = [r for r in before if r[1] >= signalled]
    failed = [r for r in before if r[2] != "OK"]
    while_not_serving = [r for r in records if r[0] > not_serving_seen and r[2] == "OK"]
    refusals = [r for r in records if r[0] > signalled and r[2] == "StatusCode.UNAVAILABLE"]
    print(f"\nrequests sent before SIGTERM: {len(before)}, in flight at the signal: "
          f"{len(in_flight)}, failed: {len(failed)}; answered after health read NOT_SERVING: "
          f"{len(while_not_serving)}; refused: {len(refusals)}")
    assert before and in_flight, "the load did not reach the signal"
    assert failed == [], failed[:5]
    assert while_not_serving, "no request was answered during the drain delay"
    assert refusals, sorted({r[2] for r in records if r[0] > signalled})
    first_refusal = min(r[1] for r in refusals)
    after_refusal = [r for r in records if r[0] > first_refusal]
    assert all(r[2] != "OK" for r in after_refusal), [r for r in after_refusal if r[2] == "OK"]
    assert "drain delay" in log and "drained:" in log, log

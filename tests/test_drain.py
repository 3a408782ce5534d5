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


def test_under_load_every_request_sent_before_sigterm_is_answered(tmp_path):
    """32 clients keep penguins busy; SIGTERM with a 1.5 s drain delay. Every request sent
    before the signal gets OK; during the delay health reads NOT_SERVING and requests are
    still answered; afterwards new ones are refused UNAVAILABLE and the server exits 0."""
    features = np.asarray([[39.1, 18.7, 181.0, 3750.0]], dtype=np.float32)
    records: list[tuple[float, float, str]] = []  # (sent, answered, status) per request
    lock = threading.Lock()
    stop = threading.Event()
    with run_server(MODELS, tmp_path, env={"ZOOSERVE_DRAIN_DELAY": "1.5"}) as server:

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
        time.sleep(2.0)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        with grpc.insecure_channel(server.url) as channel:
            time.sleep(0.5)  # inside the delay
            status = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=2).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
        assert server.process.wait(timeout=60) == 0
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        log = server.log()
    before = [r for r in records if r[0] < signalled]
    in_flight = [r for r in before if r[1] >= signalled]
    failed = [r for r in before if r[2] != "OK"]
    in_delay = [r for r in records if signalled + 0.1 < r[0] < signalled + 1.4]
    print(f"\nrequests sent before SIGTERM: {len(before)}, in flight at the signal: "
          f"{len(in_flight)}, failed: {len(failed)}; sent during the drain delay: "
          f"{len(in_delay)}, answered OK: {sum(r[2] == 'OK' for r in in_delay)}")
    assert before and in_flight, "the load did not reach the signal"
    assert failed == [], failed[:5]
    assert in_delay and all(r[2] == "OK" for r in in_delay), in_delay[:5]
    late = [r for r in records if r[0] > signalled + 2.0]  # well after the delay
    print("statuses after the delay:", sorted({r[2] for r in late}))
    assert all(r[2] != "OK" for r in late), [r for r in late if r[2] == "OK"][:5]
    assert any(r[2] == "StatusCode.UNAVAILABLE" for r in records if r[0] > signalled)
    assert "drain delay" in log and "drained:" in log, log

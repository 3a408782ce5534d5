"""`zooserve serve --workers 2` as real processes on loopback: both workers answer
tritonclient (each from its own models), the metrics port sums them and does not wait for a
stopped worker, SIGTERM drains every worker and the parent exits 0, a dead worker fails the
parent, and with one worker (the default) a second server on the same gRPC port fails with
one line instead of sharing it."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import httpx
import numpy as np
import onnxruntime
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import UntypedMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.paths import MODELS, ROOT
from tests.helpers.server import free_port, hold_lone_requests, run_server
from zooserve.serving.metrics import WorkerMetricsSum
from zooserve.serving.settings import Settings, SettingsError

READY = re.compile(r"ready: 2 workers \(pids (\d+), (\d+)\)")
# A fresh TCP connection per client: gRPC otherwise shares one among channels to the same
# address in a process, and the kernel picks a worker per connection.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
ROWS = np.array([[39.1, 18.7, 181, 3750], [46.5, 17.9, 192, 3500], [50.0, 15.2, 218, 5700]],
                dtype=np.float32)


def wait_for_log(server, pattern: re.Pattern, timeout: float = 60) -> re.Match:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.search(server.log())
        if found:
            return found
        assert server.process.poll() is None, server.log()
        time.sleep(0.1)
    raise AssertionError(f"no {pattern.pattern!r} in the log:\n{server.log()}")


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def successes(port: int) -> float:
    return scrape(port)[("nv_inference_request_success",
                         (("model", "penguins"), ("version", "1")))]


def infer_once(url: str, rows: np.ndarray = ROWS) -> np.ndarray:
    """One request from a new client on its own connection."""
    client = grpcclient.InferenceServerClient(url, channel_args=OWN_CONNECTION)
    try:
        tensor = grpcclient.InferInput("features", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows)
        return client.infer("penguins", [tensor]).as_numpy("probabilities")
    finally:
        client.close()


def worker_successes(url: str) -> int:
    """The success count of the worker this new connection lands on (its own statistics)."""
    client = grpcclient.InferenceServerClient(url, channel_args=OWN_CONNECTION)
    try:
        stats = client.get_inference_statistics("penguins", as_json=True)
    finally:
        client.close()
    return int(stats["model_stats"][0]["inference_stats"]["success"].get("count", 0))


@pytest.fixture(scope="module")
def penguins_only(tmp_path_factory):
    repository = tmp_path_factory.mktemp("repo") / "models"
    shutil.copytree(MODELS / "penguins", repository / "penguins")
    return repository


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, penguins_only):
    metrics_port = free_port()
    with run_server(penguins_only, tmp_path_factory.mktemp("workers"), "--workers", "2",
                    "--metrics-port", str(metrics_port)) as server:
        pids = [int(p) for p in wait_for_log(server, READY).groups()]
        yield server, metrics_port, pids


def test_two_workers_predict_what_onnx_runtime_predicts(two_workers):
    server, _, pids = two_workers
    assert len(set(pids)) == 2 and server.process.pid not in pids
    session = onnxruntime.InferenceSession(str(MODELS / "penguins/1/model.onnx"),
                                           providers=["CPUExecutionProvider"])
    expected = session.run(None, {"features": ROWS})[0]
    for _ in range(6):
        np.testing.assert_allclose(infer_once(server.url), expected, rtol=1e-5, atol=1e-6)
    assert expected[0].argmax() == 0  # the README's Adelie
    body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(ROWS.shape),
                        "data": ROWS.ravel().tolist()}]}
    for _ in range(4):  # a new connection each time, so both workers are likely asked
        reply = httpx.post(f"{server.http_url}/v2/models/penguins/infer", json=body, timeout=10)
        assert reply.status_code == 200, reply.text
        output = reply.json()["outputs"][0]
        got = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_both_workers_answer_and_the_metrics_port_sums_them(two_workers):
    server, metrics_port, _ = two_workers
    before = successes(metrics_port)
    sent = 40 + (1 - int(before) % 2)  # an odd total: two workers cannot hold equal counts
    for _ in range(sent):
        infer_once(server.url)
    total = successes(metrics_port)
    assert total == before + sent and total % 2 == 1
    # Each worker's statistics RPC answers from its own counters: over fresh connections
    # exactly two different counts show up, both short of the total, and they add up to it.
    seen = {worker_successes(server.url) for _ in range(30)}
    assert len(seen) == 2, seen
    assert sum(seen) == total and 0 < min(seen) and max(seen) < total


def test_a_stopped_worker_does_not_fail_the_scrape(two_workers):
    _, metrics_port, pids = two_workers
    before = scrape(metrics_port)
    os.kill(pids[1], signal.SIGSTOP)
    try:
        during = scrape(metrics_port)  # answered, though one worker cannot answer at all
    finally:
        os.kill(pids[1], signal.SIGCONT)
    fresh = ("zooserve_worker_metrics_fresh",)
    assert during[(*fresh, (("worker", "1"),))] == 1
    assert during[(*fresh, (("worker", "2"),))] == 0
    model_series = {k: v for k, v in during.items() if k[0].startswith("nv_")}
    assert model_series == {k: v for k, v in before.items() if k[0].startswith("nv_")}
    after = scrape(metrics_port)
    assert after[(*fresh, (("worker", "2"),))] == 1


@pytest.mark.slow  # a drain of several seconds in every worker
def test_sigterm_drains_every_worker_and_the_parent_exits_0(tmp_path):
    repository = tmp_path / "models"
    for name in ("digits", "penguins"):
        shutil.copytree(MODELS / name, repository / name)
    hold_lone_requests(repository / "digits")  # in flight at SIGTERM
    image = np.random.default_rng(5).random((1, 28, 28, 1), dtype=np.float32)
    result: dict[str, object] = {}
    with run_server(repository, tmp_path, "--workers", "2") as server:
        wait_for_log(server, READY)

        def held_request() -> None:
            client = grpcclient.InferenceServerClient(server.url, channel_args=OWN_CONNECTION)
            tensor = grpcclient.InferInput("image", list(image.shape), "FP32")
            tensor.set_data_from_numpy(image)
            try:
                result["answer"] = client.infer("digits", [tensor], client_timeout=60)
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                result["error"] = exc
            finally:
                client.close()

        request = threading.Thread(target=held_request)
        request.start()
        server.wait_for_in_flight("digits")  # taken on by a worker, waiting in its queue
        server.process.send_signal(signal.SIGTERM)
        request.join(timeout=60)
        assert server.process.wait(timeout=30) == 0
        log = server.log()
    assert "error" not in result, result.get("error")
    assert result["answer"].as_numpy("probabilities").shape == (1, 10)
    drained = re.findall(r"worker (\d) \(pid \d+\) zooserve.serving.server: drained: "
                         r"(\d+) inference requests accepted, (\d+) answered", log)
    assert sorted(w for w, _, _ in drained) == ["1", "2"], log
    assert all(accepted == answered for _, accepted, answered in drained)
    assert sum(int(accepted) for _, accepted, _ in drained) == 1  # the held request
    assert "stopped: all 2 workers drained and exited 0" in log


def test_sigterm_while_the_workers_start_exits_0(tmp_path, penguins_only):
    log_path = tmp_path / "starting.log"
    with open(log_path, "w") as log:
        parent = subprocess.Popen(
            [sys.executable, "-m", "zooserve", "serve", "--models", str(penguins_only),
             "--workers", "2", "--grpc-port", str(free_port()), "--http-port",
             str(free_port()), "--metrics-port", str(free_port())],
            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while "metrics on" not in log_path.read_text():  # the workers are being started
            assert parent.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.02)
        parent.send_signal(signal.SIGTERM)  # whatever each worker is doing by now
        assert parent.wait(timeout=30) == 0, log_path.read_text()
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
    last = log_path.read_text().strip().splitlines()[-1]
    assert re.search(r"zooserve.serving.workers: stopped(: all 2 workers drained and| "
                     r"while starting: [012] of 2 workers had started, and) exited 0$", last), last


def test_a_worker_that_dies_stops_the_others_and_fails_the_parent(tmp_path, penguins_only):
    with run_server(penguins_only, tmp_path, "--workers", "2") as server:
        first, second = (int(p) for p in wait_for_log(server, READY).groups())
        os.kill(first, signal.SIGKILL)
        assert server.process.wait(timeout=30) == 1
        log = server.log()
    assert f"worker 1 (pid {first}) exited while serving with code -9" in log
    assert f"worker 2 (pid {second}) zooserve.serving.server: drained:" in log
    assert log.strip().splitlines()[-1] == (
        f"zooserve serve: error: worker 1 (pid {first}) exited while serving with code -9")


def serve_once(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ZOOSERVE_")}
    return subprocess.run([sys.executable, "-m", "zooserve", "serve", *args],
                          capture_output=True, text=True, cwd=ROOT, env=clean, timeout=timeout)


def test_a_worker_that_cannot_start_fails_the_parent_with_its_reason(penguins_only):
    result = serve_once("--models", str(penguins_only), "--workers", "2", "--device", "cuda",
                        "--grpc-port", str(free_port()), "--http-port", str(free_port()),
                        "--metrics-port", str(free_port()))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"zooserve serve: error: worker [12]: --device cuda .*no CUDA provider.*",
                        last), result.stderr


def test_a_second_server_on_the_same_grpc_port_fails_with_one_line(tmp_path, penguins_only):
    with run_server(penguins_only, tmp_path) as first:  # --workers 1, the default
        port = int(first.url.rsplit(":", 1)[1])
        http_port = int(first.http_url.rsplit(":", 1)[1])
        # The listeners do not set SO_REUSEPORT: a socket that does cannot join them.
        for taken in (port, http_port):
            with socket.socket() as joiner:
                joiner.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                with pytest.raises(OSError):
                    joiner.bind(("127.0.0.1", taken))
        for workers in ("1", "2"):
            second = serve_once("--models", str(penguins_only), "--grpc-port", str(port),
                                "--http-port", str(free_port()),
                                "--metrics-port", str(free_port()), "--workers", workers)
            assert second.returncode == 1
            assert second.stderr.strip().splitlines() == [
                f"zooserve serve: error: cannot listen for gRPC on 127.0.0.1:{port} "
                "(Address already in use)"]
        assert first.process.poll() is None  # the first one serves on


def test_the_workers_setting():
    assert Settings().workers == 1
    assert Settings.from_sources({}, {"ZOOSERVE_WORKERS": "3"}).workers == 3
    assert Settings.from_sources({"workers": "2"}, {"ZOOSERVE_WORKERS": "3"}).workers == 2
    with pytest.raises(SettingsError, match="ZOOSERVE_WORKERS: must be at least 1"):
        Settings.from_sources({}, {"ZOOSERVE_WORKERS": "0"})


def test_the_sum_keeps_label_values_that_need_escaping():
    """Two metrics endpoints (prometheus_client's own servers, in this process) as two
    workers: the view sums each series by name and labels, escaping intact."""
    odd = 'pen"gu\\ins'

    class Fixed:
        def __init__(self, values):
            self.values = values

        def collect(self):
            family = UntypedMetricFamily("nv_inference_count", "rows", labels=["model", "version"])
            for model, value in self.values.items():
                family.add_metric([model, "1"], value)
            yield family

    view, servers = WorkerMetricsSum(), []
    for number, values in ((1, {"penguins": 3, odd: 1}), (2, {"penguins": 4})):
        registry = CollectorRegistry(auto_describe=False)
        registry.register(Fixed(values))
        server, _ = start_http_server(0, addr="127.0.0.1", registry=registry)
        servers.append(server)
        view.add_worker(number, server.server_port)
    try:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(view)
        text = generate_latest(registry).decode()
    finally:
        for server in servers:
            server.shutdown()
    summed = {(s.name, s.labels.get("model", s.labels.get("worker"))): s.value
              for family in text_string_to_metric_families(text) for s in family.samples}
    assert summed == {("nv_inference_count", "penguins"): 7, ("nv_inference_count", odd): 1,
                      ("zooserve_worker_metrics_fresh", "1"): 1,
                      ("zooserve_worker_metrics_fresh", "2"): 1}

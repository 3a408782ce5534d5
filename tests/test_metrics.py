"""`zooserve serve` exposes per-model Prometheus metrics on its metrics port, under Triton's
names, and they move with the requests tritonclient sends."""

from __future__ import annotations

import shutil
import threading
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from tests.helpers.paths import MODELS
from tests.helpers.server import free_port, hold_lone_requests, run_server

ODD_NAME = 'pen"gu\\ins'  # a model folder name that needs escaping in a label value


def scrape(port: int) -> dict[tuple[str, str, str], float]:
    """(metric, model, version) -> value, parsed by prometheus_client's own parser."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    return {
        (sample.name, sample.labels["model"], sample.labels["version"]): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if "model" in sample.labels
    }


@pytest.fixture(scope="module")
def metrics_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("metrics")
    repository = tmp / "models"
    shutil.copytree(MODELS / "penguins", repository / "penguins")
    shutil.copytree(MODELS / "penguins", repository / ODD_NAME)
    port = free_port()
    with run_server(repository, tmp, "--metrics-port", str(port)) as running:
        yield running, port


def test_counters_move_with_requests(metrics_server):
    server, port = metrics_server
    before = scrape(port)
    key = ("nv_inference_request_success", "penguins", "1")
    assert key in before

    client = grpcclient.InferenceServerClient(server.url)
    rows = np.array([[39.1, 18.7, 181, 3750], [46.5, 17.9, 192, 3500]], dtype=np.float32)
    tensor = grpcclient.InferInput("features", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    for _ in range(3):
        client.infer("penguins", [tensor])
    wrong = grpcclient.InferInput("features", [1, 3], "FP32")
    wrong.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("penguins", [wrong])
    client.close()

    after = scrape(port)

    def moved(metric: str) -> float:
        return after[(metric, "penguins", "1")] - before[(metric, "penguins", "1")]

    assert moved("nv_inference_request_success") == 3
    assert moved("nv_inference_request_failure") == 1
    assert moved("nv_inference_count") == 6  # three batches of two
    assert moved("nv_inference_exec_count") == 3
    assert moved("nv_inference_request_duration_us") > 0
    assert moved("nv_inference_compute_infer_duration_us") > 0
    # The other model's counters stand still.
    assert after[("nv_inference_request_success", ODD_NAME, "1")] == 0


def test_label_values_are_escaped(metrics_server):
    _, port = metrics_server
    models = {model for _, model, _ in scrape(port)}
    assert models == {"penguins", ODD_NAME}


def test_metrics_port_in_use_is_a_clear_startup_error(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError) as caught, run_server(
            MODELS, tmp_path, "--metrics-port", str(port)
        ):
            pass
    assert f"cannot listen for metrics on 127.0.0.1:{port}" in str(caught.value)


def test_requests_in_flight_are_a_gauge_that_returns_to_zero(tmp_path, copy_model):
    """A lone row waits in the queue for a batch of four (up to 10 s); three more rows fill
    the batch and both requests are answered. The gauge counts each request while it is in."""
    repo = copy_model("penguins")
    hold_lone_requests(repo / "penguins", delay_us=10_000_000, batch_rows=4)
    rows = np.tile(np.array([[39.1, 18.7, 181, 3750]], dtype=np.float32), (4, 1))
    answers: list = []
    with run_server(repo, tmp_path) as server:
        assert server.in_flight("penguins") == 0
        client = grpcclient.InferenceServerClient(server.url)

        def infer(batch: np.ndarray) -> None:
            tensor = grpcclient.InferInput("features", list(batch.shape), "FP32")
            tensor.set_data_from_numpy(batch)
            answers.append(client.infer("penguins", [tensor], client_timeout=60))

        first = threading.Thread(target=infer, args=(rows[:1],))
        first.start()
        server.wait_for_in_flight("penguins", 1)
        assert first.is_alive()  # waiting for its batch to fill: the delay is 10 s
        infer(rows[1:])
        first.join(timeout=60)
        assert server.in_flight("penguins") == 0
        client.close()
    assert sorted(a.as_numpy("probabilities").shape[0] for a in answers) == [1, 3]

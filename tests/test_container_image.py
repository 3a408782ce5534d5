"""The container image, built from the project's Dockerfile and run by a real Docker engine.

`scripts/test` makes sure an engine answers (it installs and starts one as root). No registry
can be reached here, so the images are built FROM a stand-in for python:3.11-slim-bookworm:
a Debian 12 image that `scripts/image-base` makes with debootstrap (the report header says
so). Containers use the host's network (the engine runs without a bridge), each on free ports.

What is checked: the CPU image serves its models to tritonclient with the same numbers as
ONNX Runtime in this process; gRPC health and the metrics port answer; it runs as a numeric
non-root user on a read-only root filesystem; an image built for one model carries only that
model; SIGTERM under load loses no accepted request and the container exits 0. How the image
is built and run is in tests/helpers/server_image.py; tests/test_container_models.py takes it
through a registry and serves models from outside it."""

from __future__ import annotations

import collections
import json
import os
import re
import threading
import time
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.helpers.images import docker, require_engine, skip_without_containers
from tests.helpers.paths import MODELS
from tests.helpers.penguin_rows import LABELS, one_of_each
from tests.helpers.server_image import (
    START_TIMEOUT_S,
    USER,
    build_server_image,
    infer,
    local_run,
    run_container,
    stand_in_base,
)

STOP_GRACE_S = 30

pytestmark = [pytest.mark.slow, skip_without_containers]


@pytest.fixture(scope="module")
def engine() -> str:
    return require_engine()


@pytest.fixture(scope="module")
def base(engine) -> str:
    return stand_in_base()


@pytest.fixture(scope="module")
def zoo_image(base) -> str:
    return build_server_image(base, "zooserve-test:cpu")


@pytest.fixture(scope="module")
def penguins_image(base) -> str:
    return build_server_image(base, "zooserve-test-penguins:cpu", "penguins")


def test_the_zoo_image_serves_its_models_like_onnx_runtime(zoo_image):
    features, species = one_of_each()
    rng = np.random.default_rng(7)
    digits = rng.random((3, 28, 28, 1), dtype=np.float32)
    with run_container(zoo_image) as container:
        client = grpcclient.InferenceServerClient(container.url)
        served = infer(client, "penguins", {"features": features})
        expected = local_run("penguins", {"features": features})
        np.testing.assert_allclose(served["probabilities"], expected["probabilities"], rtol=1e-5)
        assert [LABELS[i] for i in served["probabilities"].argmax(axis=1)] == species
        served_penguins = served["probabilities"]

        served = infer(client, "digits", {"image": digits})
        expected = local_run("digits", {"image": digits})
        np.testing.assert_allclose(served["probabilities"], expected["probabilities"],
                                   rtol=1e-5, atol=1e-7)

        index = {m.name for m in client.get_model_repository_index().models}
        assert index == {p.name for p in MODELS.iterdir() if p.is_dir()}

        with urllib.request.urlopen(container.metrics_url, timeout=5) as reply:
            metrics = reply.read().decode()
        assert re.search(r'nv_inference_request_success\{model="penguins",version="1"\} 1\.0',
                         metrics), metrics[:2000]
        assert re.search(r'nv_inference_request_success\{model="digits",version="1"\} 1\.0',
                         metrics)

        # The same model over HTTP, KServe v2 REST.
        body = {"inputs": [{"name": "features", "datatype": "FP32",
                            "shape": list(features.shape), "data": features.ravel().tolist()}]}
        request = urllib.request.Request(
            f"{container.http_url}/v2/models/penguins/infer", data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as reply:
            (output,) = json.loads(reply.read())["outputs"]
        np.testing.assert_allclose(np.reshape(output["data"], output["shape"]),
                                   served_penguins,
                                   rtol=1e-5)

        # The image's own health command (its HEALTHCHECK) agrees.
        done = docker("exec", container.name, "zooserve", "health")
        assert done.stdout.strip() == "SERVING"
        client.close()


def test_the_image_runs_as_a_numeric_user_on_a_read_only_root(zoo_image):
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}",
                               zoo_image).stdout)
    assert config["User"] == USER
    assert config["Entrypoint"] == ["zooserve", "serve"]
    assert set(config["ExposedPorts"]) == {"8000/tcp", "8001/tcp", "8002/tcp"}
    with run_container(zoo_image) as container:
        assert docker("exec", container.name, "id", "-u").stdout.strip() == "10001"
        # zooserve itself is PID 1, so SIGTERM reaches it.
        cmdline = docker("exec", container.name, "cat", "/proc/1/cmdline").stdout
        assert "zooserve" in cmdline and "serve" in cmdline
        # The Kubernetes preStop hook runs /bin/sleep in the container.
        assert docker("exec", container.name, "/bin/sleep", "0", check=False).returncode == 0
        denied = docker("exec", container.name, "touch", "/models/x", check=False)
        assert denied.returncode != 0 and "Read-only file system" in denied.stderr
        host_config = json.loads(docker("inspect", "--format", "{{json .HostConfig}}",
                                        container.name).stdout)
        assert host_config["ReadonlyRootfs"] is True
        # The build's pip settings and CA bundle were BuildKit secrets: nothing of them is left.
        leftovers = docker("exec", container.name, "sh", "-c",
                           "ls -d /run/secrets /etc/pip.conf /src /root/.cache 2>/dev/null",
                           check=False)
        assert leftovers.stdout.strip() == ""


def test_onnx_runtime_threads_follow_the_containers_cpu_limit(zoo_image):
    """ONNX Runtime would size its pool to the host's cores; the server reads the container's
    CPU limit (here `docker run --cpus 1`, a cgroup quota) instead. One inference thread, so
    that the automatic count is the whole limit."""
    cores = len(os.sched_getaffinity(0))
    if cores < 2:
        pytest.skip("needs a host with 2 cores or more to tell a 1-core limit apart")

    def intra_op_threads(*extra: str) -> tuple[str, str]:
        with run_container(zoo_image, "-e", "ZOOSERVE_INFERENCE_THREADS=1", *extra) as container:
            client = grpcclient.InferenceServerClient(container.url)
            config = client.get_model_config("digits", as_json=True)["config"]
            client.close()
            return config["parameters"]["intra_op_thread_count"]["string_value"], container.logs()

    unlimited, _ = intra_op_threads()
    limited, log = intra_op_threads("--cpus", "1")
    assert unlimited == str(cores)
    assert limited == "1", log
    assert re.search(r"CPU limit 1 \(cgroup quota 1 cores", log), log


def test_the_image_says_what_it_carries(zoo_image, penguins_image):
    def label(image: str) -> list[str]:
        labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}",
                                   image).stdout)
        return labels["io.zooserve.models"].split(",")

    from zooserve.repository.layout import sha256_of_file

    carried = label(penguins_image)
    assert carried == [f"penguins:1@sha256:{sha256_of_file(MODELS / 'penguins/1/model.onnx')}"]
    assert {entry.split(":")[0] for entry in label(zoo_image)} == {
        p.name for p in MODELS.iterdir() if p.is_dir()
    }


def test_a_single_model_image_carries_only_that_model(penguins_image):
    listing = docker("run", "--rm", "--entrypoint", "ls", penguins_image, "-R", "/models").stdout
    assert listing.split("\n\n")[0].split() == ["/models:", "penguins"]
    assert "model.onnx" in listing and ".png" not in listing
    with run_container(penguins_image) as container:
        client = grpcclient.InferenceServerClient(container.url)
        assert [m.name for m in client.get_model_repository_index().models] == ["penguins"]
        with pytest.raises(InferenceServerException, match="digits"):
            client.get_model_metadata("digits")
        client.close()


def test_sigterm_under_load_answers_every_accepted_request(zoo_image):
    """32 clients send penguins requests without pause; SIGTERM arrives mid-stream (docker
    stop, as Kubernetes would). Every request the server accepted must come back answered:
    the server's own count of answered requests (its last log line) equals the answers the
    clients received, and nothing accepted was cut. Requests refused while draining come
    back UNAVAILABLE (or, racing the final close, CANCELLED before any handler ran)."""
    features, _ = one_of_each()
    outcomes: collections.Counter[str] = collections.Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def client_loop(url: str) -> None:
        client = grpcclient.InferenceServerClient(url)
        tensor = grpcclient.InferInput("features", [1, 4], "FP32")
        tensor.set_data_from_numpy(features[:1])
        while not stop.is_set():
            try:
                result = client.infer("penguins", [tensor], client_timeout=STOP_GRACE_S)
                assert result.as_numpy("probabilities").shape == (1, 3)
                outcome = "OK"
            except InferenceServerException as exc:
                outcome = str(exc.status())
                time.sleep(0.05)
            with lock:
                outcomes[outcome] += 1
        client.close()

    with run_container(zoo_image) as container:
        threads = [threading.Thread(target=client_loop, args=(container.url,)) for _ in range(32)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while sum(outcomes.values()) < 3 * len(threads):  # every client is in its loop
            assert time.monotonic() < deadline, (dict(outcomes), container.logs())
            time.sleep(0.02)
        with lock:
            before = outcomes["OK"]
        started = time.monotonic()
        docker("stop", "--time", str(STOP_GRACE_S), container.name)
        stopped_in = time.monotonic() - started
        stop.set()
        for thread in threads:
            thread.join(timeout=STOP_GRACE_S)
        state = container.state()
        logs = container.logs()

    print(f"SIGTERM after {before} answers; stopped in {stopped_in:.2f} s; {dict(outcomes)}")
    assert before > 0, logs
    assert state["ExitCode"] == 0 and not state["OOMKilled"], logs
    summary = re.search(r"drained: (\d+) inference requests accepted, (\d+) answered", logs)
    assert summary, logs[-3000:]
    accepted, answered = int(summary.group(1)), int(summary.group(2))
    assert accepted == answered == outcomes["OK"], (summary.group(0), dict(outcomes))
    refused = {k: v for k, v in outcomes.items() if k != "OK"}
    assert set(refused) <= {"StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"}, refused


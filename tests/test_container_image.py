"""The container image, built from the project's Dockerfile and run by a real Docker engine.

`scripts/test` makes sure an engine answers (it installs and starts one as root). No registry
can be reached here, so the images are built FROM a stand-in for python:3.11-slim-bookworm:
a Debian 12 image that `scripts/image-base` makes with debootstrap (the report header says
so). Containers use the host's network (the engine runs without a bridge), each on free ports.

What is checked: the CPU image serves its models to tritonclient with the same numbers as
ONNX Runtime in this process; gRPC health and the metrics port answer; it runs as a numeric
non-root user on a read-only root filesystem; an image built for one model carries only that
model; SIGTERM under load loses no accepted request and the container exits 0; the image
goes to a real registry with `docker push` and comes back with `docker pull`, and serves;
it serves models mounted from model-only images as the image-volume manifests mount them."""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers.images import build_model_image, copy_remote, docker_login, image_size
from tests.helpers.paths import MODELS, ROOT, STAND_IN_BASE
from tests.helpers.penguin_rows import LABELS, one_of_each
from tests.helpers.server import free_port

DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
USER = "10001:10001"
START_TIMEOUT_S = 90
STOP_GRACE_S = 30

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("ZOOSERVE_SKIP_CONTAINER_TESTS") == "1",
                       reason="ZOOSERVE_SKIP_CONTAINER_TESTS=1"),
]


def docker(*args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def engine() -> str:
    done = subprocess.run([DOCKER, "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(
            f"no Docker engine answers {DOCKER} ({done.stderr.strip()}); scripts/test starts "
            "one as root, or set ZOOSERVE_SKIP_CONTAINER_TESTS=1 to leave these tests out"
        )
    return done.stdout.strip()


@pytest.fixture(scope="module")
def base(engine) -> str:
    """The stand-in base image (built once; the engine keeps it between runs)."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "image-base")], capture_output=True, text=True,
        env={**os.environ, "DOCKER": DOCKER, "ZOOSERVE_STAND_IN_BASE": STAND_IN_BASE},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def build(base: str, tag: str, *models: str) -> str:
    command = [sys.executable, "-m", "zooserve", "image", "build", "--base", base, "--tag", tag]
    if models:
        command += ["--models", *models]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "DOCKER": DOCKER})
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    # The last line names the tag and the size: `zooserve:cpu  326 MB  built in 39 s`.
    assert done.stdout.strip().splitlines()[-1].startswith(tag)
    print(done.stdout.strip())
    return tag


@pytest.fixture(scope="module")
def zoo_image(base) -> str:
    return build(base, "zooserve-test:cpu")


@pytest.fixture(scope="module")
def penguins_image(base) -> str:
    return build(base, "zooserve-test-penguins:cpu", "penguins")


@dataclass
class Container:
    name: str
    url: str  # gRPC
    http_url: str  # KServe v2 REST
    metrics_url: str

    def logs(self) -> str:
        done = docker("logs", self.name, check=False)
        return done.stdout + done.stderr

    def state(self) -> dict:
        return json.loads(docker("inspect", "--format", "{{json .State}}", self.name).stdout)


def wait_serving(container: Container) -> float:
    """Seconds until the health service says SERVING for the whole server."""
    started = time.monotonic()
    with grpc.insecure_channel(container.url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() - started < START_TIMEOUT_S:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return time.monotonic() - started
            except grpc.RpcError:
                pass
            if not container.state()["Running"]:
                break
            time.sleep(0.2)
    raise AssertionError(f"container not SERVING within {START_TIMEOUT_S} s:\n{container.logs()}")


@contextmanager
def run(image: str, *extra: str) -> Iterator[Container]:
    """The image run as Kubernetes would: numeric non-root user, read-only root filesystem
    with a tmpfs at /tmp, no capabilities, no privilege escalation."""
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    name = f"zooserve-test-{uuid.uuid4().hex[:8]}"
    docker(
        "run", "-d", "--name", name, "--network", "host",
        "--read-only", "--tmpfs", "/tmp", "--user", USER,
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "-e", f"ZOOSERVE_GRPC_PORT={grpc_port}", "-e", f"ZOOSERVE_HTTP_PORT={http_port}",
        "-e", f"ZOOSERVE_METRICS_PORT={metrics_port}",
        *extra, image,
    )
    container = Container(name, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}",
                          f"http://127.0.0.1:{metrics_port}/metrics")
    try:
        print(f"{image}: start to SERVING in {wait_serving(container):.1f} s")
        yield container
    finally:
        docker("rm", "-f", name, check=False)


def local_run(model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(MODELS / model / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def infer(client, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    tensors = []
    for name, array in inputs.items():
        tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = client.infer(model, tensors)
    outputs = result.get_response().outputs
    return {o.name: result.as_numpy(o.name) for o in outputs}


def test_the_zoo_image_serves_its_models_like_onnx_runtime(zoo_image):
    features, species = one_of_each()
    rng = np.random.default_rng(7)
    digits = rng.random((3, 28, 28, 1), dtype=np.float32)
    with run(zoo_image) as container:
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
    with run(zoo_image) as container:
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
        with run(zoo_image, "-e", "ZOOSERVE_INFERENCE_THREADS=1", *extra) as container:
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
    with run(penguins_image) as container:
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

    with run(zoo_image) as container:
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


def test_the_image_goes_through_a_registry_and_comes_back_serving(zoo_image, registry,
                                                                   tmp_path):
    """`docker push` to a real registry (htpasswd and TLS, tests/helpers/registry.py) after
    `docker login`, every local name of the image removed so its ID is gone, `docker pull`
    back: the same image ID, and it serves. The test's tag is put back at the end, so the
    other tests find the image whatever the order. A wrong password is refused at login."""
    config = tmp_path / "docker-config"
    refused = docker_login(registry, tmp_path / "wrong-config", password="not-the-password")
    assert refused.returncode != 0 and "unauthorized" in refused.stderr.lower(), refused.stderr
    login = docker_login(registry, config)
    assert login.returncode == 0, login.stderr

    image_id = docker("image", "inspect", "--format", "{{.Id}}", zoo_image).stdout.strip()
    remote = f"{registry.host}/zoo/zooserve:cpu"
    docker("tag", zoo_image, remote)
    started = time.monotonic()
    docker("--config", str(config), "push", remote)
    pushed_in = time.monotonic() - started
    # Tags a failed run of this test may have left on the image would keep its ID alive.
    tags = json.loads(docker("image", "inspect", "--format", "{{json .RepoTags}}",
                             image_id).stdout)
    left_over = [tag for tag in tags if tag.endswith("/zoo/zooserve:cpu") and tag != remote]
    try:
        docker("rmi", remote, zoo_image, *left_over)
        gone = docker("image", "inspect", image_id, check=False)
        assert gone.returncode != 0, f"image {image_id} is still here after rmi"
        started = time.monotonic()
        pulled = docker("--config", str(config), "pull", remote).stdout
        pulled_in = time.monotonic() - started
        assert docker("image", "inspect", "--format", "{{.Id}}",
                      remote).stdout.strip() == image_id
    finally:
        docker("tag", remote, zoo_image, check=False)
    # `docker pull` fetches no layer the engine still holds for another image (the base,
    # the packages): skopeo fetches every blob from the registry and checks its digest.
    layers = json.loads(docker("image", "inspect", "--format", "{{json .RootFS.Layers}}",
                               remote).stdout)
    started = time.monotonic()
    _, manifest = copy_remote(registry, remote, tmp_path)
    copied_in = time.monotonic() - started
    assert len(manifest["layers"]) == len(layers)
    compressed = sum(layer["size"] for layer in manifest["layers"])
    print(f"{zoo_image} ({image_id[:19]}, {image_size(remote) / 1e6:.0f} MB, "
          f"{compressed / 1e6:.0f} MB compressed) on loopback: docker push {pushed_in:.1f} s, "
          f"docker pull {pulled_in:.1f} s ({pulled.count('Pull complete')} of {len(layers)} "
          f"layers fetched), every blob by skopeo {copied_in:.1f} s")

    features, species = one_of_each()
    with run(remote) as container:
        client = grpcclient.InferenceServerClient(container.url)
        served = infer(client, "penguins", {"features": features})
        client.close()
    expected = local_run("penguins", {"features": features})
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"], rtol=1e-5)
    assert [LABELS[i] for i in served["probabilities"].argmax(axis=1)] == species
    docker("rmi", remote, check=False)


def test_models_mounted_from_model_only_images_are_what_the_image_serves(zoo_image, tmp_path):
    """As deploy/k8s/components/model-images runs it: the unchanged server image, an empty
    /models, and each model's folder of a model-only image mounted read-only at
    /models/<name>, two of them from the library's image. Docker 20.10 has no image mounts
    (`--mount type=image` came with Docker 28, on the containerd image store), so the folders
    are copied out of the images with docker cp and bind-mounted."""
    images = [build_model_image("zooserve-test-mounted-penguins:1", "penguins"),
              build_model_image("zooserve-test-mounted-library:1", "spectra_search",
                                "spectra_embedding")]
    mounts = []
    try:
        for number, image in enumerate(images):
            created = docker("create", image, "/none").stdout.strip()
            docker("cp", f"{created}:/models", str(tmp_path / str(number)))
            docker("rm", created)
            for model in sorted((tmp_path / str(number)).iterdir()):
                mounts += ["-v", f"{model}:/models/{model.name}:ro"]
    finally:
        docker("rmi", *images, check=False)
    features, _ = one_of_each()
    with run(zoo_image, "--tmpfs", "/models", *mounts) as container:
        client = grpcclient.InferenceServerClient(container.url)
        index = {(m.name, m.version, m.state) for m in client.get_model_repository_index().models}
        served = infer(client, "penguins", {"features": features})
        client.close()
    assert index == {(name, "1", "READY")
                     for name in ("penguins", "spectra_search", "spectra_embedding")}
    expected = local_run("penguins", {"features": features})
    np.testing.assert_allclose(served["probabilities"], expected["probabilities"], rtol=1e-5)

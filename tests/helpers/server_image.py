"""The server image as the container tests build and run it (tests/test_container_image.py,
tests/test_container_models.py): FROM the stand-in base that scripts/image-base makes, run as
Kubernetes runs it (numeric non-root user, read-only root, no capabilities) on the host's
network with free ports, and asked as tritonclient asks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import numpy as np
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers.images import DOCKER, docker
from tests.helpers.paths import MODELS, ROOT, STAND_IN_BASE
from tests.helpers.server import free_port

USER = "10001:10001"
START_TIMEOUT_S = 90


def stand_in_base() -> str:
    """The stand-in base image's tag (scripts/image-base builds it once; the engine keeps it
    between runs)."""
    done = subprocess.run(
        [str(ROOT / "scripts" / "image-base")], capture_output=True, text=True,
        env={**os.environ, "DOCKER": DOCKER, "ZOOSERVE_STAND_IN_BASE": STAND_IN_BASE},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def build_server_image(base: str, tag: str, *models: str) -> str:
    """`zooserve image build` of the server image FROM `base`; prints its last line."""
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
def run_container(image: str, *extra: str) -> Iterator[Container]:
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

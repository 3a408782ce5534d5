"""A real `zooserve serve` on free loopback ports, and what a test needs around one."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.paths import ROOT

START_TIMEOUT_S = 60


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RunningServer:
    url: str
    process: subprocess.Popen
    log_path: Path
    http_url: str = ""  # the KServe v2 REST paths
    metrics_port: int = 0

    def log(self) -> str:
        return self.log_path.read_text()

    def in_flight(self, model: str) -> float:
        """The model's requests taken on and not yet answered, every version together, as
        its metrics port says."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            text = response.read().decode()
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples
                   if sample.name == "zooserve_inference_requests_in_flight"
                   and sample.labels.get("model") == model)

    def wait_for_in_flight(self, model: str, count: int = 1,
                           timeout: float = START_TIMEOUT_S) -> None:
        """Wait until `count` requests for `model` are in the server (queued or running)."""
        deadline = time.monotonic() + timeout
        while self.in_flight(model) < count:
            assert self.process.poll() is None, self.log()
            assert time.monotonic() < deadline, f"{model}: no {count} in flight\n{self.log()}"
            time.sleep(0.02)


def wait_until_serving(url: str, process: subprocess.Popen, log_path: Path,
                        credentials: grpc.ChannelCredentials | None = None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    channel = (grpc.insecure_channel(url) if credentials is None
               else grpc.secure_channel(url, credentials))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                log = log_path.read_text()
                raise RuntimeError(f"server exited with {process.returncode}:\n{log}")
            try:
                stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            except grpc.RpcError:
                time.sleep(0.2)
                continue
            # Answering (SERVING or NOT_SERVING): the port is up. "ready:" is logged once the
            # server has also taken its signals over (SIGHUP is ignored until then).
            if "ready:" in log_path.read_text():
                return
            time.sleep(0.05)
    raise RuntimeError(f"server did not answer within {START_TIMEOUT_S}s:\n{log_path.read_text()}")


@contextlib.contextmanager
def run_server(
    models: Path, tmp: Path, *args: str, env: dict | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> Iterator[RunningServer]:
    """Start `python -m zooserve serve` on a free port; stop it (SIGTERM) afterwards. The
    drain delay is 0 unless `env` sets ZOOSERVE_DRAIN_DELAY: a test that stops a server
    has no load balancer to wait for. `credentials`: how to reach a TLS server's health."""
    port, http_port = free_port(), free_port()
    # A caller's own --metrics-port comes later on the command line, and wins.
    metrics_port = int(args[args.index("--metrics-port") + 1]) if "--metrics-port" in args \
        else free_port()
    log_path = tmp / f"server-{port}.log"
    command = [sys.executable, "-m", "zooserve", "serve", "--models", str(models),
               "--host", "127.0.0.1", "--grpc-port", str(port),
               "--metrics-port", str(metrics_port), "--http-port", str(http_port), *args]
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            env={**os.environ, "ZOOSERVE_DRAIN_DELAY": "0", **(env or {})},
        )
    url = f"127.0.0.1:{port}"
    try:
        wait_until_serving(url, process, log_path, credentials)
        yield RunningServer(url, process, log_path, f"http://127.0.0.1:{http_port}",
                            metrics_port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def hold_lone_requests(model_dir: Path, delay_us: int = 5_000_000, batch_rows: int = 64) -> None:
    """Give the model a serving.json under which a request of fewer than `batch_rows` rows
    waits up to `delay_us` in its queue for company: in flight for that long by construction,
    whatever the CPU, for a test that must act while a request is in the server."""
    (model_dir / "serving.json").write_text(json.dumps({"dynamic_batching": {
        "max_queue_delay_us": delay_us, "preferred_batch_sizes": [batch_rows]}}))

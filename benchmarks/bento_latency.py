"""Latency of one `bentoml serve` process, over HTTP and over gRPC, for the same model.

Sends N sequential penguin predictions (one row each) over HTTP (`POST /predict`, and the KServe
v2 REST `POST /v2/models/penguins/infer`) and N over gRPC (tritonclient), one at a time on one
kept-alive connection each, after a warm-up, and prints the median and 90th percentile.

    .venv/bin/python benchmarks/bento_latency.py                 # starts its own server
    .venv/bin/python benchmarks/bento_latency.py --http http://127.0.0.1:3000 --grpc 127.0.0.1:8001

Without --http/--grpc it starts `bentoml serve zooserve.serving.bento_frontend.service:ZooServe` on
free loopback ports over --models (default: the repository's models/), waits for /readyz and
stops it afterwards. A benchmark, not a test: it asserts nothing but that answers are 200/OK."""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import tritonclient.grpc as grpcclient

ROOT = Path(__file__).resolve().parent.parent
ROW = [39.1, 18.7, 181.0, 3750.0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def bentoml_serve(models: Path, timeout_s: float = 90) -> Iterator[tuple[str, str]]:
    http_port, grpc_port = free_port(), free_port()
    home = tempfile.mkdtemp(prefix="bento-latency-")
    env = {**os.environ, "BENTOML_HOME": home, "BENTOML_DO_NOT_TRACK": "True",
           "ZOOSERVE_MODELS": str(models), "ZOOSERVE_MODEL_SOURCE": "folder",
           "ZOOSERVE_GRPC_PORT": str(grpc_port), "ZOOSERVE_HOST": "127.0.0.1",
           "ZOOSERVE_LOG_LEVEL": "WARNING"}
    log = open(Path(home) / "serve.log", "w")  # closed in the finally below
    process = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve",
         "zooserve.serving.bento_frontend.service:ZooServe",
         "--host", "127.0.0.1", "--port", str(http_port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    http = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bentoml serve did not become ready; log in {log.name}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(http + "/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.25)
        yield http, f"127.0.0.1:{grpc_port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def measure(call: Callable[[], None], n: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def report(name: str, times: list[float]) -> None:
    p90 = float(np.percentile(times, 90))
    print(f"{name:<38} n={len(times):<4} median {statistics.median(times):6.2f} ms"
          f"   p90 {p90:6.2f} ms   min {min(times):6.2f} ms")


def run(http_url: str, grpc_url: str, n: int, warmup: int) -> None:
    with httpx.Client(base_url=http_url, timeout=10) as http:
        predict_body = {"model": "penguins", "inputs": {"features": [ROW]}}
        v2_body = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4],
                               "data": ROW}]}

        def http_predict() -> None:
            http.post("/predict", json=predict_body).raise_for_status()

        def http_v2() -> None:
            http.post("/v2/models/penguins/infer", json=v2_body).raise_for_status()

        client = grpcclient.InferenceServerClient(grpc_url)
        tensor = grpcclient.InferInput("features", [1, 4], "FP32")
        tensor.set_data_from_numpy(np.asarray([ROW], dtype=np.float32))

        def grpc_infer() -> None:
            client.infer("penguins", [tensor])

        print(f"penguins, 1 row per request, {n} sequential requests each after {warmup} "
              f"warm-up; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
        report("HTTP  POST /predict", measure(http_predict, n, warmup))
        report("HTTP  POST /v2/models/penguins/infer", measure(http_v2, n, warmup))
        report("gRPC  ModelInfer (tritonclient)", measure(grpc_infer, n, warmup))
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", help="a running server's HTTP URL, e.g. http://127.0.0.1:3000")
    parser.add_argument("--grpc", help="the same server's gRPC address, e.g. 127.0.0.1:8001")
    parser.add_argument("--models", type=Path, default=ROOT / "models",
                        help="repository to serve when starting a server [models/]")
    parser.add_argument("-n", type=int, default=200, help="requests per protocol [200]")
    parser.add_argument("--warmup", type=int, default=20, help="warm-up requests [20]")
    args = parser.parse_args()
    if bool(args.http) != bool(args.grpc):
        parser.error("--http and --grpc go together (the same server's two ports)")
    if args.http:
        run(args.http, args.grpc, args.n, args.warmup)
    else:
        with bentoml_serve(args.models.resolve()) as (http_url, grpc_url):
            run(http_url, grpc_url, args.n, args.warmup)


if __name__ == "__main__":
    main()

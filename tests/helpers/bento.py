"""The BentoML service as users run it: `bentoml serve` on free loopback ports (stopped with
its whole process group), the scratch model repository it serves, and `python -m ...` commands
in a scratch BENTOML_HOME."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from tests.helpers.echo_repository import save_version_1
from tests.helpers.paths import MODELS, ROOT
from tests.helpers.server import free_port

SERVICE = "zooserve.serving.bento_frontend.service:ZooServe"
START_TIMEOUT_S = 90
# Measured penguins (palmerpenguins), one of each species: Adelie, Chinstrap, Gentoo.
PENGUINS = [[39.1, 18.7, 181.0, 3750.0], [46.5, 17.9, 192.0, 3500.0], [46.1, 13.2, 211.0, 4500.0]]
TWO_INPUT = "spectra_similarity"


def build_two_input_model(repository: Path, bins: int = 8) -> None:
    """`<repository>/spectra_similarity/1/`: similarity = sum(spectrum_a * spectrum_b)."""
    import json

    from onnx import TensorProto, helper, numpy_helper

    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["spectrum_a", "spectrum_b"], ["product"]),
            helper.make_node("ReduceSum", ["product", "axes"], ["similarity"], keepdims=1),
        ],
        TWO_INPUT,
        [
            helper.make_tensor_value_info("spectrum_a", TensorProto.FLOAT, ["batch", bins]),
            helper.make_tensor_value_info("spectrum_b", TensorProto.FLOAT, ["batch", bins]),
        ],
        [helper.make_tensor_value_info("similarity", TensorProto.FLOAT, ["batch", 1])],
        [axes],
    )
    folder = save_version_1(repository, TWO_INPUT, graph)
    card = {"name": TWO_INPUT, "version": 1, "task": "similarity",
            "description": "test stand-in: the dot product of two spectra"}
    (folder / "card.json").write_text(json.dumps(card))


def make_test_repository(folder: Path) -> Path:
    """penguins (shipped) and a two-input model (shipped, or built when not yet shipped)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(MODELS / "penguins", folder / "penguins")
    if (MODELS / TWO_INPUT).is_dir():
        shutil.copytree(MODELS / TWO_INPUT, folder / TWO_INPUT)
    else:
        build_two_input_model(folder)
    return folder



@dataclass
class RunningBento:
    http: str  # http://127.0.0.1:<port>
    grpc: str  # 127.0.0.1:<port>
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def run_bento(
    target: str, tmp: Path, env: dict[str, str], cwd: Path = ROOT, wait_for: str = "/readyz",
    tls: ssl.SSLContext | None = None,
) -> Iterator[RunningBento]:
    """`bentoml serve <target>` on free loopback ports, answering 200 on `wait_for` when
    yielded (over HTTPS trusting `tls`, when the Bento is given TLS files); the whole process
    group (arbiter and worker) is stopped afterwards, whatever happens."""
    http_port, grpc_port = free_port(), free_port()
    log_path = tmp / f"bentoml-{http_port}.log"
    command = [sys.executable, "-m", "bentoml", "serve", target,
               "--host", "127.0.0.1", "--port", str(http_port)]
    environment = {**os.environ, "BENTOML_DO_NOT_TRACK": "True",
                   "ZOOSERVE_GRPC_PORT": str(grpc_port), "ZOOSERVE_HOST": "127.0.0.1", **env}
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
                                   env=environment, start_new_session=True)
    running = RunningBento(f"http://127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}",
                           process, log_path)
    try:
        _wait_until_answering(running, wait_for, tls)
        yield running
    finally:
        _stop(process)


def _wait_until_answering(running: RunningBento, path: str, tls: ssl.SSLContext | None) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    url = running.http + path if tls is None else running.http.replace("http:", "https:") + path
    while time.monotonic() < deadline:
        if running.process.poll() is not None:
            raise RuntimeError(f"bentoml serve exited with {running.process.returncode}:\n"
                               + running.log()[-5000:])
        try:
            if httpx.get(url, verify=tls or True, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"not ready within {START_TIMEOUT_S}s:\n" + running.log()[-5000:])


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):  # a worker left behind
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def command(
    *args: str, home: Path, timeout: float = 300, cwd: Path = ROOT
) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True"}
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result

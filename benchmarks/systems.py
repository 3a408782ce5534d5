"""How each system under test starts, says it is ready, and stops: one fresh server per system
per round, in its own session (process group), so its whole tree can be measured and stopped."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from benchmarks import loadgen, payloads, proctree
from benchmarks.peers import venvs

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
VENV_BIN = Path(sys.executable).parent
PEERS = Path(__file__).resolve().parent / "peers"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Running:
    """A started server: its root process, addresses, and how long it took to answer."""

    name: str
    process: subprocess.Popen
    log: Path
    grpc_target: str = ""
    http_url: str = ""
    ready_s: float = float("nan")       # process start to every model answering
    serving_s: float | None = None      # process start to gRPC health SERVING (zooserve)
    info: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass(frozen=True)
class System:
    """One row family of the table: how to start it and how to load it."""

    key: str
    label: str
    protocol: str               # "grpc" or "http"
    peer: str | None = None     # the venv it needs, if not the project's
    stream: bool = False        # also measured over ModelStreamInfer
    workers: int = 0            # zooserve --workers N (0: flag not passed)
    typed: bool = False         # send fp32_contents instead of raw contents

    def start(self, log_dir: Path, timeout_s: float = 120) -> Running:
        return _STARTERS[self.key.split("@")[0]](self, log_dir, timeout_s)


def _popen(name: str, argv: list[str], log_dir: Path, env: dict | None = None,
           cwd: Path = ROOT) -> tuple[subprocess.Popen, Path]:
    log = log_dir / f"{name}-{int(time.time() * 1000)}.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(argv, cwd=cwd, env={**os.environ, **(env or {})},
                                   stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    return process, log


def _wait_grpc_ready(running: Running, started: float, timeout_s: float,
                     health: bool = False, typed: bool = False) -> Running:
    """Poll until every model answers a real inference request correctly (and, with health,
    record when the gRPC health service first said SERVING)."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    requests = {m: payloads.infer_request_bytes(m, typed) for m in payloads.MODELS}
    deadline = started + timeout_s
    with grpc.insecure_channel(running.grpc_target) as channel:
        infer = channel.unary_unary(loadgen.INFER)
        check = health_pb2_grpc.HealthStub(channel).Check
        while health and running.serving_s is None:
            _alive_or_raise(running, deadline)
            with contextlib.suppress(grpc.RpcError):
                reply = check(health_pb2.HealthCheckRequest(service=""), timeout=0.5)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    running.serving_s = time.monotonic() - started
                    break
            time.sleep(0.005)
        pending = dict(requests)
        while pending:
            _alive_or_raise(running, deadline)
            for model, request in list(pending.items()):
                try:
                    payloads.check_infer_response(model, infer(request, timeout=5))
                    del pending[model]
                except grpc.RpcError:
                    time.sleep(0.05)
    running.ready_s = time.monotonic() - started
    return running


def answers(running: Running, model: str) -> None:
    """One real request to a running server; raises unless it is answered correctly."""
    if running.http_url:
        import httpx

        reply = httpx.post(f"{running.http_url}/v2/models/{model}/infer",
                           content=payloads.rest_body(model), timeout=5,
                           headers={"Content-Type": "application/json"})
        reply.raise_for_status()
        payloads.check_rest_response(model, reply.content)
        return
    with grpc.insecure_channel(running.grpc_target) as channel:
        reply = channel.unary_unary(loadgen.INFER)(payloads.infer_request_bytes(model),
                                                   timeout=5)
        payloads.check_infer_response(model, reply)


def last_error_line(log: Path) -> str:
    """The log's first line that reads like a fatal error, else its last line."""
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    for line in text:
        if any(word in line for word in ("terminate called", "what():", "Traceback",
                                         "Segmentation", "Error:")):
            return line.strip()[:200]
    return text[-1].strip()[:200] if text else ""


def _wait_http_ready(running: Running, started: float, timeout_s: float) -> Running:
    import httpx

    deadline = started + timeout_s
    pending = set(payloads.MODELS)
    while pending:
        _alive_or_raise(running, deadline)
        for model in list(pending):
            with contextlib.suppress(httpx.TransportError):
                reply = httpx.post(f"{running.http_url}/v2/models/{model}/infer",
                                   content=payloads.rest_body(model), timeout=5,
                                   headers={"Content-Type": "application/json"})
                if reply.status_code == 200:
                    payloads.check_rest_response(model, reply.content)
                    pending.discard(model)
        if pending:
            time.sleep(0.1)
    running.ready_s = time.monotonic() - started
    return running


def _alive_or_raise(running: Running, deadline: float) -> None:
    if running.process.poll() is not None:
        raise RuntimeError(f"{running.name} exited with {running.process.returncode} before "
                           f"it was ready; log: {running.log}\n{_tail(running.log)}")
    if time.monotonic() > deadline:
        stop(running)
        raise RuntimeError(f"{running.name} was not ready in time; log: {running.log}\n"
                           f"{_tail(running.log)}")


def _tail(log: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    return ""


def stop(running: Running, timeout_s: float = 30) -> None:
    """SIGTERM the server (and a tritonserver child first, which pytriton needs), then the
    process group; SIGKILL whatever is left after timeout_s."""
    pids = proctree.tree(running.pid)
    for pid, name in zip(pids, proctree.names(pids), strict=True):
        if name == "tritonserver":
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(running.pid, signal.SIGTERM)
    try:
        running.process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(running.pid, signal.SIGKILL)  # stragglers in the group
    with contextlib.suppress(subprocess.TimeoutExpired):
        running.process.wait(timeout=5)


# --- the starters -------------------------------------------------------------------------

def _start_bare(system: System, log_dir: Path, timeout_s: float) -> Running:
    port = free_port()
    started = time.monotonic()
    process, log = _popen(system.key, [sys.executable, "-m", "benchmarks.floors.bare_grpc_server",
                                       "--models", str(MODELS), "--port", str(port),
                                       *payloads.MODELS], log_dir)
    running = Running(system.key, process, log, grpc_target=f"127.0.0.1:{port}")
    return _wait_grpc_ready(running, started, timeout_s)


def _start_zooserve(system: System, log_dir: Path, timeout_s: float) -> Running:
    port, http_port = free_port(), free_port()
    argv = [str(VENV_BIN / "zooserve"), "serve", "--models", str(MODELS),
            "--grpc-port", str(port), "--http-port", str(http_port), "--metrics-port", "0",
            "--log-level", "WARNING"]
    if system.workers:
        argv += ["--workers", str(system.workers)]
    started = time.monotonic()
    process, log = _popen(system.key, argv, log_dir)
    running = Running(system.key, process, log, grpc_target=f"127.0.0.1:{port}",
                      http_url=f"http://127.0.0.1:{http_port}")
    return _wait_grpc_ready(running, started, timeout_s, health=True)


def _start_bento(system: System, log_dir: Path, timeout_s: float) -> Running:
    http_port, grpc_port = free_port(), free_port()
    home = Path(tempfile.mkdtemp(prefix="bench-bento-", dir=log_dir))
    env = {"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "True",
           "ZOOSERVE_MODELS": str(MODELS), "ZOOSERVE_MODEL_SOURCE": "folder",
           "ZOOSERVE_GRPC_PORT": str(grpc_port), "ZOOSERVE_HOST": "127.0.0.1",
           "ZOOSERVE_LOG_LEVEL": "WARNING"}
    started = time.monotonic()
    process, log = _popen(system.key, [sys.executable, "-m", "bentoml", "serve",
                                       "zooserve.serving.bento_frontend.service:ZooServe",
                                       "--host", "127.0.0.1", "--port", str(http_port)],
                          log_dir, env)
    running = Running(system.key, process, log, http_url=f"http://127.0.0.1:{http_port}")
    return _wait_http_ready(running, started, timeout_s)


def _start_triton(system: System, log_dir: Path, timeout_s: float) -> Running:
    python = venvs.python_of("triton")
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    argv = [str(python), str(PEERS / "triton_server.py"), "--models", str(MODELS),
            "--grpc-port", str(grpc_port), "--http-port", str(http_port),
            "--metrics-port", str(metrics_port), *payloads.MODELS]
    if system.key == "triton-batch":
        argv.insert(2, "--dynamic-batching")
    # the python backend stub loads libpython3.11 from the interpreter's own lib folder
    code = "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"
    libdir = subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    env = {"LD_LIBRARY_PATH": os.pathsep.join(
        p for p in (libdir, os.environ.get("LD_LIBRARY_PATH", "")) if p)}
    started = time.monotonic()
    process, log = _popen(system.key, argv, log_dir, env)
    running = Running(system.key, process, log, grpc_target=f"127.0.0.1:{grpc_port}")
    return _wait_grpc_ready(running, started, timeout_s)


def _start_kserve(system: System, log_dir: Path, timeout_s: float) -> Running:
    grpc_port, http_port = free_port(), free_port()
    argv = [str(venvs.python_of("kserve")), str(PEERS / "kserve_server.py"),
            "--models", str(MODELS), "--http_port", str(http_port), "--grpc_port", str(grpc_port),
            "--enable_latency_logging", "false"]
    started = time.monotonic()
    process, log = _popen(system.key, argv, log_dir)
    running = Running(system.key, process, log, grpc_target=f"127.0.0.1:{grpc_port}")
    return _wait_grpc_ready(running, started, timeout_s)


def _start_mlserver(system: System, log_dir: Path, timeout_s: float) -> Running:
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    argv = [str(venvs.python_of("mlserver")), str(PEERS / "mlserver_server.py"),
            "--models", str(MODELS), "--grpc-port", str(grpc_port),
            "--http-port", str(http_port), "--metrics-port", str(metrics_port)]
    started = time.monotonic()
    process, log = _popen(system.key, argv, log_dir)
    running = Running(system.key, process, log, grpc_target=f"127.0.0.1:{grpc_port}")
    return _wait_grpc_ready(running, started, timeout_s)


_STARTERS = {
    "bare": _start_bare, "zooserve": _start_zooserve, "zooserve-w2": _start_zooserve,
    "bento": _start_bento, "triton": _start_triton, "triton-batch": _start_triton,
    "kserve": _start_kserve, "mlserver": _start_mlserver,
}

SYSTEMS = {s.key: s for s in (
    System("bare", "bare grpc.aio server (Python gRPC floor)", "grpc"),
    System("zooserve", "zooserve gRPC", "grpc", stream=True),
    System("zooserve-w2", "zooserve gRPC --workers 2", "grpc", workers=2),
    System("bento", "zooserve BentoML HTTP (KServe v2 REST)", "http"),
    System("triton", "Triton 2.51 (pytriton 0.7.0), no dynamic batching", "grpc", peer="triton"),
    System("triton-batch", "Triton 2.51 (pytriton 0.7.0), dynamic batching", "grpc",
           peer="triton"),
    System("kserve", "KServe 0.21 ModelServer", "grpc", peer="kserve"),
    System("mlserver", "MLServer 1.7.1", "grpc", peer="mlserver"),
)}


def zooserve_has_workers() -> bool:
    out = subprocess.run([str(VENV_BIN / "zooserve"), "serve", "--help"], capture_output=True,
                         text=True).stdout
    return "--workers" in out


def stream_available(target: str) -> str:
    """"" when the server answers ModelStreamInfer, else why not (UNIMPLEMENTED, ...)."""
    request = payloads.infer_request_bytes("penguins")
    with grpc.insecure_channel(target) as channel:
        try:
            answers = channel.stream_stream(loadgen.STREAM_INFER)(iter([request]), timeout=10)
            for answer in answers:
                error = loadgen._stream_error(answer)
                if error:
                    return f"error_message: {error}"
                payloads.check_infer_response("penguins", _infer_response_of(answer))
                return ""
            return "no answer on the stream"
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"


def _infer_response_of(answer: bytes) -> bytes:
    """The ModelInferResponse inside a ModelStreamInferResponse (field 2, length-delimited)."""
    pos = 0
    while pos < len(answer):
        tag = answer[pos]
        pos += 1
        length, shift = 0, 0
        while True:
            byte = answer[pos]
            pos += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        if tag == 0x12:
            return answer[pos:pos + length]
        pos += length
    raise ValueError("no infer_response in the stream answer")

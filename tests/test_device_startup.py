"""The device and thread settings seen from outside: a real `zooserve serve` process. On this
machine's onnxruntime (CPU only) `--device cuda` must stop startup with one line; the threads
chosen reach every session, and tritonclient (in this process, the client) reads the provider
and thread counts from ModelConfig."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import tritonclient.grpc as grpcclient

from tests.helpers.paths import MODELS, ROOT
from tests.helpers.server import free_port, run_server
from zooserve.serving.cpus import auto_intra_op_threads, detect_cpu_limit

KIND_CPU = grpcclient.model_config_pb2.ModelInstanceGroup.KIND_CPU


def serve_once(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "zooserve", "serve", "--models", str(MODELS),
               "--grpc-port", str(free_port()), "--metrics-port", str(free_port()),
               "--http-port", str(free_port()), *args]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ZOOSERVE_")}
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**clean, **(env or {})})


@pytest.mark.parametrize("args, env", [
    (["--device", "cuda"], {}),
    ([], {"ZOOSERVE_DEVICE": "cuda"}),
])  # fmt: skip
def test_device_cuda_without_cuda_stops_startup_with_one_line(args, env):
    result = serve_once(*args, env=env)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(
        "zooserve serve: error: --device cuda (ZOOSERVE_DEVICE=cuda): this onnxruntime build "
        "has no CUDA provider (it has "
    )
    assert lines[-1].endswith(
        "install the `gpu` extra (onnxruntime-gpu) instead of `serve`, or use --device auto"
    )
    assert [line for line in lines if "error" in line.lower()] == lines[-1:]


@pytest.mark.parametrize("args, env, message", [
    (["--ort-threads", "-2"], {}, "zooserve serve: error: --ort-threads: must be 0 or auto"),
    ([], {"ZOOSERVE_ORT_THREADS": "two"},
     "zooserve serve: error: ZOOSERVE_ORT_THREADS: expected an integer, got 'two'"),
])  # fmt: skip
def test_a_bad_thread_setting_is_named(args, env, message):
    result = serve_once(*args, env=env)
    assert result.returncode == 2
    assert result.stderr.startswith(message)
    assert len(result.stderr.strip().splitlines()) == 1


def _config(url: str, name: str):
    client = grpcclient.InferenceServerClient(url)
    try:
        return client.get_model_config(name).config
    finally:
        client.close()


def test_auto_threads_and_the_cpu_provider_reach_the_client(tmp_path, copy_model):
    # One inference thread, so the auto rule gives each session the whole CPU limit.
    repo = copy_model("penguins")
    expected = auto_intra_op_threads(detect_cpu_limit().cores, 1)
    with run_server(repo, tmp_path, env={"ZOOSERVE_INFERENCE_THREADS": "1"}) as server:
        config = _config(server.url, "penguins")
        log = server.log()
    assert config.parameters["execution_providers"].string_value == "CPUExecutionProvider"
    assert config.parameters["intra_op_thread_count"].string_value == str(expected)
    assert config.parameters["inter_op_thread_count"].string_value == "1"
    assert config.instance_group[0].kind == KIND_CPU
    assert list(config.instance_group[0].gpus) == []
    assert log.count("ONNX Runtime: ") == 1
    assert f"ONNX Runtime: {expected} intra-op thread" in log
    assert f"auto: {detect_cpu_limit().cores} cores shared by 1 inference threads" in log
    assert "loaded penguins version 1 from" in log
    assert "on CPU (providers CPUExecutionProvider; intra-op threads" in log


def test_ort_threads_flag_reaches_every_session(tmp_path):
    with run_server(MODELS, tmp_path, "--ort-threads", "3", "--device", "cpu") as server:
        configs = {name: _config(server.url, name) for name in ("penguins", "digits")}
        log = server.log()
    for config in configs.values():
        assert config.parameters["intra_op_thread_count"].string_value == "3"
        assert config.instance_group[0].kind == KIND_CPU
    assert "ONNX Runtime: 3 intra-op threads per session (set by --ort-threads" in log


CONFIG_ON_FAKE_CUDA = """
from pathlib import Path

import onnxruntime
from zooserve.serving import onnx_sessions
from zooserve.protocol.generated import model_config_pb2 as config_pb
from zooserve.serving.grpc_frontend.messages import model_config
from zooserve.serving.load_options import LoadOptions
from zooserve.serving.repository import ModelRepository
from zooserve.serving.server import model_kinds

class ClaimsCuda:
    def __init__(self, real):
        self._real = real
    def get_providers(self):
        return [onnx_sessions.CUDA, onnx_sessions.CPU]
    def __getattr__(self, name):
        return getattr(self._real, name)

def create(path, providers, threads):
    real = onnx_sessions._create_session(path, [onnx_sessions.CPU], threads)
    return ClaimsCuda(real) if onnx_sessions.CUDA in providers else real

onnxruntime.get_available_providers = lambda: [onnx_sessions.CUDA, onnx_sessions.CPU]
onnx_sessions.prepare_cuda = lambda: ""
repository = ModelRepository(Path({repo!r}), model_kinds(),
                             LoadOptions(device="cuda", intra_op_threads=2, create=create))
repository.load()
config = model_config(repository.get("penguins")).config
group = config.instance_group[0]
print(config_pb.ModelInstanceGroup.Kind.Name(group.kind), list(group.gpus),
      config.parameters["execution_providers"].string_value,
      config.parameters["intra_op_thread_count"].string_value)
"""


def test_model_config_says_kind_gpu_when_cuda_is_in_use(copy_model):
    """The CUDA-obtained path cannot run here (no GPU, CPU-only onnxruntime): a fake factory
    wraps a real CPU session and reports CUDA in use. In its own process, so the patched
    factory reaches no other test."""
    repo = copy_model("penguins")
    script = CONFIG_ON_FAKE_CUDA.format(repo=str(repo))
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "KIND_GPU [0] CUDAExecutionProvider,CPUExecutionProvider 2"

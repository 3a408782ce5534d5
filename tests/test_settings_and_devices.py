"""Settings precedence (flags over ZOOSERVE_* variables over defaults), the choice of ONNX
Runtime execution providers, and the thread settings that reach each session. The CUDA cases
use a fake session factory because this machine has no GPU (and its onnxruntime has no CUDA
provider); the CPU cases run real ONNX Runtime."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from zooserve.serving import onnx_sessions
from zooserve.serving.cpus import CpuLimit
from zooserve.serving.dataplane import DataPlane
from zooserve.serving.load_options import LoadOptions
from zooserve.serving.onnx_sessions import (
    CPU,
    CUDA,
    DeviceUnavailable,
    _create_session,
    open_session,
)
from zooserve.serving.repository import ModelRepository
from zooserve.serving.server import model_kinds
from zooserve.serving.settings import Settings, SettingsError

PENGUINS = Path(__file__).resolve().parent.parent / "models" / "penguins" / "1" / "model.onnx"


def test_defaults():
    settings = Settings.from_sources({}, {})
    assert (settings.models, settings.grpc_port, settings.device) == (Path("models"), 8001, "auto")


def test_environment_overrides_defaults_and_flags_override_environment():
    env = {"ZOOSERVE_GRPC_PORT": "9001", "ZOOSERVE_MODELS": "/zoo", "ZOOSERVE_DEVICE": "CPU"}
    assert Settings.from_sources({}, env).grpc_port == 9001
    assert Settings.from_sources({}, env).device == "cpu"
    settings = Settings.from_sources({"grpc_port": "9002", "models": None}, env)
    assert settings.grpc_port == 9002
    assert settings.models == Path("/zoo")


def test_metrics_port_defaults_to_tritons_and_reads_the_environment():
    assert Settings.from_sources({}, {}).metrics_port == 8002
    assert Settings.from_sources({}, {"ZOOSERVE_METRICS_PORT": "9102"}).metrics_port == 9102


@pytest.mark.parametrize("flags,env,fragment", [
    ({"grpc_port": "http"}, {}, "--grpc-port: expected an integer, got 'http'"),
    ({}, {"ZOOSERVE_GRPC_PORT": "70000"}, "ZOOSERVE_GRPC_PORT: port must be between"),
    ({"device": "tpu"}, {}, "--device: must be one of auto, cpu, cuda, tensorrt, got 'tpu'"),
    ({}, {"ZOOSERVE_MAX_BATCH_SIZE": "0"}, "ZOOSERVE_MAX_BATCH_SIZE: must be at least 1"),
    ({}, {"ZOOSERVE_METRICS_PORT": "-1"}, "ZOOSERVE_METRICS_PORT: port must be between"),
    ({"ort_threads": "-1"}, {}, "--ort-threads: must be 0 or auto (chosen from the CPU limit)"),
    ({}, {"ZOOSERVE_ORT_THREADS": "many"}, "ZOOSERVE_ORT_THREADS: expected an integer, got 'many'"),
])
def test_a_bad_setting_names_its_source(flags, env, fragment):
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources(flags, env)
    assert fragment in str(caught.value)


def test_ort_threads_defaults_to_auto_and_reads_flag_and_environment():
    assert Settings.from_sources({}, {}).ort_threads == 0
    assert Settings.from_sources({}, {"ZOOSERVE_ORT_THREADS": "3"}).ort_threads == 3
    assert Settings.from_sources({}, {"ZOOSERVE_ORT_THREADS": "Auto"}).ort_threads == 0
    both = Settings.from_sources({"ort_threads": "2"}, {"ZOOSERVE_ORT_THREADS": "3"})
    assert both.ort_threads == 2


class FakeSession:
    """Stands in for an ONNX Runtime session on a GPU machine (none here)."""

    def __init__(self, providers_in_use):
        self._providers = providers_in_use

    def get_providers(self):
        return self._providers


def fake_factory(cuda_works: bool, events: list | None = None):
    """A session factory that records (providers, threads) and gets CUDA only if told so."""
    calls = events if events is not None else []

    def create(path, providers, threads):
        calls.append((providers, threads))
        in_use = [p for p in providers if p != CUDA or cuda_works]
        return FakeSession(in_use)

    return create, calls


def no_preload() -> str:
    return ""


def test_auto_uses_cuda_when_it_really_works():
    create, calls = fake_factory(cuda_works=True)
    session = open_session(
        PENGUINS, "auto", available=[CUDA, CPU], create=create, intra_op_threads=2,
        prepare=no_preload,
    )
    assert session.get_providers() == [CUDA, CPU]
    assert calls == [([CUDA, CPU], 2)]


def test_auto_falls_back_to_cpu_when_cuda_cannot_be_created():
    create, _ = fake_factory(cuda_works=False)
    session = open_session(
        PENGUINS, "auto", available=[CUDA, CPU], create=create, prepare=no_preload
    )
    assert session.get_providers() == [CPU]


def test_cuda_insists_on_a_working_gpu():
    create, _ = fake_factory(cuda_works=False)
    with pytest.raises(DeviceUnavailable, match="could not create the CUDA provider"):
        open_session(PENGUINS, "cuda", available=[CUDA, CPU], create=create, prepare=no_preload)
    with pytest.raises(DeviceUnavailable, match="no CUDA provider") as caught:
        open_session(PENGUINS, "cuda", available=[CPU], create=create, prepare=no_preload)
    message = str(caught.value)
    assert message.startswith("--device cuda (ZOOSERVE_DEVICE=cuda): ")
    assert "\n" not in message


def test_preload_runs_once_before_the_first_cuda_session_and_its_failure_is_told():
    """The preload step (onnxruntime.preload_dlls with the gpu extra) comes before any CUDA
    session; under `cuda` its failure is part of the one-line reason, under `auto` it is not
    fatal. Fake factory and fake preload: no GPU here."""
    events: list = []
    create, _ = fake_factory(cuda_works=False, events=events)

    def failing_preload() -> str:
        events.append("preload")
        return "onnxruntime.preload_dlls() failed: libcudnn.so.9 not found"

    session = open_session(
        PENGUINS, "auto", available=[CUDA, CPU], create=create, prepare=failing_preload
    )
    assert session.get_providers() == [CPU]
    assert events == ["preload", ([CUDA, CPU], 0)]
    with pytest.raises(DeviceUnavailable, match="libcudnn.so.9 not found"):
        open_session(
            PENGUINS, "cuda", available=[CUDA, CPU], create=create, prepare=failing_preload
        )
    events.clear()
    open_session(PENGUINS, "cpu", available=[CUDA, CPU], create=create, prepare=failing_preload)
    assert events == [([CPU], 0)]  # the CPU never preloads CUDA


def test_prepare_cuda_calls_preload_dlls_once_and_survives_its_failure(monkeypatch, caplog):
    import onnxruntime

    calls = []

    def broken_preload():
        calls.append(1)
        raise OSError("libcudart.so.13: cannot open shared object file")

    monkeypatch.setattr(onnxruntime, "preload_dlls", broken_preload, raising=False)
    onnx_sessions.prepare_cuda.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="zooserve.serving.onnx_sessions"):
            problem = onnx_sessions.prepare_cuda()
            assert onnx_sessions.prepare_cuda() == problem
        assert calls == [1]
        assert problem == (
            "onnxruntime.preload_dlls() failed: libcudart.so.13: cannot open shared object file"
        )
        assert problem in caplog.text
        monkeypatch.delattr(onnxruntime, "preload_dlls")
        onnx_sessions.prepare_cuda.cache_clear()
        assert onnx_sessions.prepare_cuda() == ""  # older builds: nothing to call
    finally:
        onnx_sessions.prepare_cuda.cache_clear()


def test_cuda_that_fails_loudly_falls_back_under_auto_and_stops_cuda():
    """Some ONNX Runtime builds raise instead of dropping the provider (fake: no GPU here)."""

    def create(path, providers, threads):
        if CUDA in providers:
            raise RuntimeError("CUDA failure 100: no CUDA-capable device is detected\nmore")
        return _create_session(path, providers, threads)

    session = open_session(PENGUINS, "auto", available=[CUDA, CPU], create=create,
                           prepare=no_preload)
    assert session.get_providers() == [CPU]
    with pytest.raises(DeviceUnavailable) as caught:
        open_session(PENGUINS, "cuda", available=[CUDA, CPU], create=create, prepare=no_preload)
    assert "no CUDA-capable device is detected more" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_broken_file_is_the_files_fault_not_the_devices(tmp_path):
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(Exception) as caught:
        open_session(broken, "cuda", available=[CUDA, CPU], create=_cuda_raises,
                     prepare=no_preload)
    assert not isinstance(caught.value, DeviceUnavailable)


def _cuda_raises(path, providers, threads):
    if CUDA in providers:
        raise RuntimeError("CUDA provider failed")
    return _create_session(path, providers, threads)


def test_auto_on_this_machine_runs_real_onnxruntime_on_the_cpu():
    session = open_session(PENGUINS, "auto")
    assert session.get_providers() == [CPU]


# Threads, read back from real ONNX Runtime sessions.

def test_thread_settings_reach_a_real_session():
    session = open_session(PENGUINS, "cpu", intra_op_threads=3)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 3
    assert options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert open_session(PENGUINS, "cpu", intra_op_threads=1).get_session_options(
    ).intra_op_num_threads == 1


@pytest.mark.parametrize("cores, inference_threads, ort_threads, expected", [
    (2, 4, 0, 1),    # this machine and small pods: no intra-op pool, requests side by side
    (16, 4, 0, 4),   # a big CPU limit is shared among the inference threads
    (3, 2, 0, 1),    # rounded down: never more busy threads than cores
    (2, 4, 5, 5),    # an explicit setting wins
])  # fmt: skip
def test_each_session_gets_the_chosen_thread_count(
    cores, inference_threads, ort_threads, expected, caplog
):
    settings = Settings(
        models=PENGUINS.parent.parent.parent, device="cpu", ort_threads=ort_threads,
        inference_threads=inference_threads,
    )
    limit = CpuLimit(cores=cores, quota=float(cores), affinity=cores, source="test")
    with caplog.at_level(logging.INFO, logger="zooserve"):
        dataplane = DataPlane.from_settings(settings, model_kinds(), cpu_limit=limit)
    try:
        models = dataplane.models()
        assert len(models) >= 6
        for model in models:
            assert model.session.get_session_options().intra_op_num_threads == expected
            assert model.intra_op_threads == expected
            assert model.device == "CPU"
        chosen = [r.getMessage() for r in caplog.records if "intra-op thread" in r.getMessage()
                  and r.name == "zooserve.serving.dataplane"]
        assert len(chosen) == 1  # once at startup, not per model
        assert chosen[0].startswith(f"ONNX Runtime: {expected} intra-op thread")
        assert f"CPU limit {cores} (cgroup quota {cores} cores" in chosen[0]
    finally:
        dataplane.close()


# The CUDA-obtained path. No GPU here: a fake factory wraps a real CPU session and reports
# the CUDA provider as in use, so everything above the provider list is real.

class ClaimsCuda:
    def __init__(self, real):
        self._real = real

    def get_providers(self):
        return [CUDA, CPU]

    def __getattr__(self, name):
        return getattr(self._real, name)


def cuda_that_works(path, providers, threads):
    real = _create_session(path, [CPU], threads)
    return ClaimsCuda(real) if CUDA in providers else real


def cuda_that_is_dropped(path, providers, threads):
    return _create_session(path, [CPU], threads)


def penguins_only(copy_model) -> Path:
    return copy_model("penguins")


def test_cuda_obtained_loads_every_model_on_the_gpu_and_says_so(copy_model, monkeypatch, caplog):
    """Fake CUDA (no GPU here): the repository logs one line per model version naming the
    device and providers, and is ready."""
    monkeypatch.setattr(onnx_sessions, "prepare_cuda", no_preload)
    monkeypatch.setattr("onnxruntime.get_available_providers", lambda: [CUDA, CPU])
    repository = ModelRepository(
        penguins_only(copy_model), model_kinds(),
        LoadOptions(device="cuda", create=cuda_that_works, intra_op_threads=1))
    with caplog.at_level(logging.INFO, logger="zooserve.serving.repository"):
        repository.load()
    model = repository.get("penguins")
    assert (model.device, model.providers) == ("GPU", [CUDA, CPU])
    loaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("loaded ")]
    assert len(loaded) == 1
    assert "on GPU (providers CUDAExecutionProvider,CPUExecutionProvider; intra-op threads 1)" in (
        loaded[0]
    )
    assert repository.ready


def test_cuda_dropped_stops_the_load_instead_of_a_silent_cpu_model(copy_model, monkeypatch):
    """Fake CUDA that ONNX Runtime drops (no GPU here): under `cuda` the load raises
    DeviceUnavailable (the server does not start); under `auto` the model serves on the CPU
    and the log says so."""
    monkeypatch.setattr(onnx_sessions, "prepare_cuda", no_preload)
    monkeypatch.setattr("onnxruntime.get_available_providers", lambda: [CUDA, CPU])
    repo = penguins_only(copy_model)
    strict = ModelRepository(repo, model_kinds(),
                             LoadOptions(device="cuda", create=cuda_that_is_dropped))
    with pytest.raises(DeviceUnavailable, match="could not create the CUDA provider"):
        strict.load()
    assert strict.index() == []  # not recorded as one broken model
    relaxed = ModelRepository(repo, model_kinds(),
                              LoadOptions(device="auto", create=cuda_that_is_dropped))
    relaxed.load()
    assert relaxed.get("penguins").device == "CPU"
    assert relaxed.ready


def test_readiness_is_false_when_cuda_was_asked_for_and_a_model_is_on_the_cpu(copy_model):
    repository = ModelRepository(penguins_only(copy_model), model_kinds(),
                                 LoadOptions(device="cpu"))
    repository.load()
    assert repository.ready
    # as if a model had slipped onto the CPU under `cuda`
    repository.options = dataclasses.replace(repository.options, device="cuda")
    assert not repository.ready

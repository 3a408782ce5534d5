"""Settings precedence (flags over ZOOSERVE_* variables over defaults) and the choice of ONNX
Runtime execution providers. The CUDA cases use a fake session factory because this machine
has no GPU; the CPU case runs real ONNX Runtime."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.runtime import CPU, CUDA, open_session
from service.settings import Settings, SettingsError

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
    ({"device": "tpu"}, {}, "--device: must be one of auto, cpu, cuda, got 'tpu'"),
    ({}, {"ZOOSERVE_MAX_BATCH_SIZE": "0"}, "ZOOSERVE_MAX_BATCH_SIZE: must be at least 1"),
    ({}, {"ZOOSERVE_METRICS_PORT": "-1"}, "ZOOSERVE_METRICS_PORT: port must be between"),
])
def test_a_bad_setting_names_its_source(flags, env, fragment):
    with pytest.raises(SettingsError) as caught:
        Settings.from_sources(flags, env)
    assert fragment in str(caught.value)


class FakeSession:
    """Stands in for an ONNX Runtime session on a GPU machine (none here)."""

    def __init__(self, providers_in_use):
        self._providers = providers_in_use

    def get_providers(self):
        return self._providers


def fake_factory(cuda_works: bool):
    calls = []

    def create(path, providers):
        calls.append(providers)
        in_use = [p for p in providers if p != CUDA or cuda_works]
        return FakeSession(in_use)

    return create, calls


def test_auto_uses_cuda_when_it_really_works():
    create, calls = fake_factory(cuda_works=True)
    session = open_session(PENGUINS, "auto", available=[CUDA, CPU], create=create)
    assert session.get_providers() == [CUDA, CPU]
    assert calls == [[CUDA, CPU]]


def test_auto_falls_back_to_cpu_when_cuda_cannot_be_created():
    create, _ = fake_factory(cuda_works=False)
    session = open_session(PENGUINS, "auto", available=[CUDA, CPU], create=create)
    assert session.get_providers() == [CPU]


def test_cuda_insists_on_a_working_gpu():
    create, _ = fake_factory(cuda_works=False)
    with pytest.raises(RuntimeError, match="CUDA provider could not be created"):
        open_session(PENGUINS, "cuda", available=[CUDA, CPU], create=create)
    with pytest.raises(RuntimeError, match="no CUDA provider"):
        open_session(PENGUINS, "cuda", available=[CPU], create=create)


def test_auto_on_this_machine_runs_real_onnxruntime_on_the_cpu():
    session = open_session(PENGUINS, "auto")
    assert session.get_providers() == [CPU]

"""`--device tensorrt`: TensorRT first, then CUDA and the CPU for the nodes it leaves, and a
one-line DeviceUnavailable when TensorRT cannot be had. No GPU and no TensorRT build here,
so the sessions are fakes: a real CPU session that claims the providers it was asked for."""

from __future__ import annotations

import pytest

from tests.helpers.paths import MODELS
from zooserve.serving.onnx_sessions import (
    CPU,
    CUDA,
    TENSORRT,
    DeviceUnavailable,
    _create_session,
    device_of,
    open_session,
)

PENGUINS = MODELS / "penguins" / "1" / "model.onnx"


class _Claims:
    def __init__(self, real, providers):
        self._real, self._providers = real, providers

    def get_providers(self):
        return self._providers

    def __getattr__(self, name):
        return getattr(self._real, name)


def test_tensorrt_asks_for_tensorrt_then_cuda_then_the_cpu():
    asked = []

    def create(path, providers, threads):
        asked.append(providers)
        return _Claims(_create_session(path, [CPU], threads), providers)

    session = open_session(PENGUINS, "tensorrt", available=[TENSORRT, CUDA, CPU], create=create,
                           prepare=lambda: "")
    assert asked == [[TENSORRT, CUDA, CPU]]
    assert device_of(session.get_providers()) == "GPU"


def test_tensorrt_missing_from_the_build_stops_startup_with_one_line():
    with pytest.raises(DeviceUnavailable) as caught:
        open_session(PENGUINS, "tensorrt", available=[CUDA, CPU], prepare=lambda: "")
    message = str(caught.value)
    assert message.startswith("--device tensorrt (ZOOSERVE_DEVICE=tensorrt): this onnxruntime "
                              "build has no TensorRT provider")
    assert "\n" not in message


def test_tensorrt_dropped_at_run_time_stops_startup():
    def create(path, providers, threads):  # ONNX Runtime drops a provider it cannot create
        return _Claims(_create_session(path, [CPU], threads), [CUDA, CPU])

    with pytest.raises(DeviceUnavailable) as caught:
        open_session(PENGUINS, "tensorrt", available=[TENSORRT, CUDA, CPU], create=create,
                     prepare=lambda: "libnvinfer.so.10 not found")
    assert "could not create the TensorRT provider" in str(caught.value)
    assert "libnvinfer.so.10 not found" in str(caught.value)

"""The Dockerfile and `zooserve image build`, checked without a Docker engine: hadolint's
rules, the arguments a build is planned with, and mistakes refused before docker runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.paths import MODELS, ROOT
from zooserve.image import ImageError, plan_build
from zooserve.repository.layout import sha256_of_file


def test_the_dockerfile_is_hadolint_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    done = subprocess.run([str(hadolint), str(ROOT / "Dockerfile")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_pins_are_the_ones_the_dockerfile_installs():
    dockerfile = (ROOT / "Dockerfile").read_text()
    for pins in ("requirements-cpu.txt", "requirements-gpu-cuda13.txt"):
        assert pins in dockerfile
        text = (ROOT / "deploy" / "image" / pins).read_text()
        assert "--hash=sha256:" in text  # installed with --require-hashes
        assert "tensorflow" not in text and "\nonnx==" not in text
    cpu = (ROOT / "deploy" / "image" / "requirements-cpu.txt").read_text()
    assert "\nonnxruntime==" in cpu and "onnxruntime-gpu" not in cpu
    gpu = (ROOT / "deploy" / "image" / "requirements-gpu-cuda13.txt").read_text()
    assert "\nonnxruntime-gpu==" in gpu and "\nonnxruntime==" not in gpu
    assert "nvidia-cudnn" in gpu


def test_a_build_is_planned_with_the_models_and_their_checksums():
    plan = plan_build(MODELS, ["penguins", "weather"], None, gpu=False, base="local/base:1")
    assert plan.tag == "zooserve-penguins-weather:cpu" and plan.target == "cpu"
    assert plan.build_args["MODELS"] == "penguins,weather"
    assert plan.build_args["BASE"] == "local/base:1"
    assert plan.models_label == ",".join(
        f"{name}:1@sha256:{sha256_of_file(MODELS / name / '1' / 'model.onnx')}"
        for name in ("penguins", "weather")
    )
    everything = plan_build(MODELS, None, None, gpu=True, base=None, cuda="12")
    assert everything.tag == "zooserve:gpu" and everything.target == "gpu"
    assert everything.build_args["MODELS"] == "" and "BASE" not in everything.build_args
    assert everything.build_args["GPU_REQUIREMENTS"] == "requirements-gpu-cuda12.txt"
    assert len(everything.models_label.split(",")) == len(
        [p for p in MODELS.iterdir() if p.is_dir()]
    )


def test_an_empty_repository_is_refused(tmp_path):
    with pytest.raises(ImageError, match="no models"):
        plan_build(tmp_path, None, None, gpu=False, base=None)


def test_an_unknown_model_stops_the_build_before_docker_runs():
    done = subprocess.run(
        [sys.executable, "-m", "zooserve", "image", "build", "--models", "penguins", "dolphins"],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "DOCKER": "/nonexistent"},
    )
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "no model 'dolphins'" in done.stderr and "penguins" in done.stderr


def test_the_build_is_told_this_machines_index_but_not_its_local_folders(tmp_path, monkeypatch):
    from zooserve.image import pip_secrets

    bundle = tmp_path / "ca.pem"
    bundle.write_text("certificates")
    monkeypatch.setenv("PIP_INDEX_URL", "https://mirror.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///opt/pypi/simple https://more.example/simple")
    monkeypatch.setenv("PIP_CERT", str(bundle))
    secrets = pip_secrets(tmp_path)
    assert secrets["cacert"] == bundle
    conf = secrets["pipconf"].read_text().splitlines()
    assert "index-url = https://mirror.example/simple" in conf
    assert "extra-index-url = https://more.example/simple" in conf
    assert "cert = /run/secrets/cacert" in conf
    assert not any("file:" in line for line in conf)

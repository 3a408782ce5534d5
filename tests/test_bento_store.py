"""The zoo in BentoML's model store and in a Bento, each step a real command in a scratch
BENTOML_HOME: `zooserve bento import`, `bentoml build` from the repository's bentofile.yaml,
and `bentoml serve` of the built Bento, which loads its models from the store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.bento import PENGUINS, TWO_INPUT, command, make_test_repository, ok, run_bento


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Iterator[Path]:
    """A BENTOML_HOME with the test repository imported."""
    tmp = tmp_path_factory.mktemp("store")
    repository = make_test_repository(tmp / "models")
    (repository / "penguins" / "serving.json").write_text('{"max_queue_size": 7}')
    home = tmp / "bentoml"
    imported = ok(command("zooserve", "bento", "import", "--models", str(repository), home=home))
    assert imported.stdout.splitlines()[:2] == [
        "penguins:1            imported",
        f"{TWO_INPUT}:1  imported",
    ]
    again = ok(command("zooserve", "bento", "import", "--models", str(repository), home=home))
    assert "penguins:1            unchanged" in again.stdout
    yield home


@pytest.fixture(scope="module")
def bento_tag(home) -> str:
    built = ok(command("bentoml", "build", "--output", "tag", home=home))
    return built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")


def test_import_keeps_the_card_and_labels(home):
    model = json.loads(ok(command("bentoml", "models", "get", "penguins:1", "-o", "json",
                                  home=home)).stdout)
    assert model["labels"]["zooserve"] == "model"
    assert model["labels"]["task"] == "classification"
    assert model["metadata"]["class_labels"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert model["metadata"]["card"]["name"] == "penguins"
    stored = home / "models" / "penguins" / "1"
    assert (stored / "model.onnx").is_file() and (stored / "card.json").is_file()
    # How the model is served travels with it (docs/serving.md).
    assert json.loads((stored / "serving.json").read_text()) == {"max_queue_size": 7}


def test_build_makes_a_bento_that_lists_the_models(home, bento_tag):
    info = json.loads(ok(command("bentoml", "get", bento_tag, "-o", "json", home=home)).stdout)
    (service,) = info["services"]
    assert {m["tag"] for m in service["models"]} == {"penguins:1", f"{TWO_INPUT}:1"}
    assert service["config"]["workers"] == 1
    assert {e["name"]: e["value"] for e in info["envs"]}["ZOOSERVE_MODEL_SOURCE"] == "store"
    bento_dir = home / "bentos" / bento_tag.replace(":", "/")
    assert (bento_dir / "env" / "docker" / "Dockerfile").is_file()
    requirements = (bento_dir / "env" / "python" / "requirements.txt").read_text()
    assert "onnxruntime" in requirements and "onnxruntime-gpu" not in requirements


def test_the_bento_serves_its_models_from_the_store(home, bento_tag, tmp_path):
    env = {"BENTOML_HOME": str(home), "ZOOSERVE_MODELS": str(tmp_path / "no-such-folder")}
    with run_bento(bento_tag, tmp_path, env, cwd=tmp_path) as running:
        response = httpx.post(running.http + "/predict",
                              json={"model": "penguins", "inputs": PENGUINS}, timeout=10)
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == 3
        assert "from the BentoML model store" in running.log()
        penguins = [line for line in running.log().splitlines() if "loaded penguins" in line]
        # its serving.json, from the store
        assert penguins and "up to 7 waiting to run" in penguins[0]


def test_the_gpu_bentofile_builds_with_onnxruntime_gpu(home):
    """Built only (no GPU and no Docker here): the requirements and the CUDA base image."""
    built = ok(command("bentoml", "build", "-f", "bentofile.gpu.yaml", "--output", "tag",
                       home=home))
    tag = built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    bento_dir = home / "bentos" / tag.replace(":", "/")
    requirements = (bento_dir / "env" / "python" / "requirements.txt").read_text().split()
    assert "onnxruntime-gpu>=1.31" in requirements
    assert not any(r.startswith("onnxruntime>") for r in requirements)
    dockerfile = (bento_dir / "env" / "docker" / "Dockerfile").read_text()
    assert "FROM nvidia/cuda:" in dockerfile and "ZOOSERVE_DEVICE" in dockerfile

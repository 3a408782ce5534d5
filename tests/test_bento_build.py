"""A Bento never ships empty, and `zooserve bento build` makes one of exactly the models asked
for. Every step is a real command in a scratch BENTOML_HOME: `bentoml build` as a new user
runs it (nothing imported yet), `zooserve bento build --only penguins` over a store that holds
more, `bentoml serve` of that Bento, and `bentoml serve` from an empty store."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.helpers.bento import (
    PENGUINS,
    SERVICE,
    TWO_INPUT,
    command,
    make_test_repository,
    ok,
    run_bento,
)

EMPTY_BUILD = "refusing to build a Bento with no models"


def bentos_in(home: Path) -> list[str]:
    """The Bentos in the store, read from its folders (`bentoml list` costs a Python start)."""
    bentos = home / "bentos"
    if not bentos.is_dir():
        return []
    return sorted(f"{name.name}:{version.name}" for name in bentos.iterdir() if name.is_dir()
                  for version in name.iterdir() if version.is_dir())


def one_line_error(result) -> str:
    """The refusal: a failed command whose whole complaint is one line on stderr."""
    assert result.returncode != 0, result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_bentoml_build_without_models_refuses_and_leaves_no_bento(tmp_path):
    """The README's `bentoml build` before any `zooserve bento import`."""
    home = tmp_path / "bentoml"
    line = one_line_error(command("bentoml", "build", home=home))
    assert EMPTY_BUILD in line and "zooserve bento build" in line
    assert bentos_in(home) == []
    assert not (home / "tmp").exists() or not any((home / "tmp").iterdir())  # no half-built one


@dataclass
class Built:
    home: Path
    repository: Path
    tag: str
    stdout: str


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Iterator[Built]:
    """A store that holds penguins and the two-input model, and a Bento of penguins alone."""
    tmp = tmp_path_factory.mktemp("build")
    repository = make_test_repository(tmp / "models")
    home = tmp / "bentoml"
    ok(command("zooserve", "bento", "import", "--models", str(repository), home=home))
    result = ok(command("zooserve", "bento", "build", "--models", str(repository),
                        "--only", "penguins", home=home, cwd=tmp))  # not from the project
    (tag,) = [line.split()[1] for line in result.stdout.splitlines()
              if line.startswith("bento:")]
    yield Built(home, repository, tag, result.stdout)


def test_zooserve_bento_build_only_penguins_carries_exactly_penguins(built):
    assert built.stdout.splitlines() == [
        "penguins:1  unchanged",
        f"bento:  {built.tag}",
        "models: penguins:1",
    ]
    info = json.loads(ok(command("bentoml", "get", built.tag, "-o", "json",
                                 home=built.home)).stdout)
    (service,) = info["services"]
    assert [m["tag"] for m in service["models"]] == ["penguins:1"]
    assert info["args"] == {"models": "penguins:1"}
    assert bentos_in(built.home) == [built.tag]


def test_the_penguins_bento_serves_penguins_alone(built, tmp_path):
    """The store still holds the two-input model; the Bento's argument keeps it out."""
    env = {"BENTOML_HOME": str(built.home), "ZOOSERVE_MODELS": str(tmp_path / "nothing")}
    with run_bento(built.tag, tmp_path, env, cwd=tmp_path) as running:
        listing = httpx.post(running.http + "/models", json={}, timeout=10).json()
        assert [m["name"] for m in listing["models"]] == ["penguins"]
        answer = httpx.post(running.http + "/predict",
                            json={"model": "penguins", "inputs": PENGUINS}, timeout=10)
        assert answer.status_code == 200, answer.text


def test_builds_that_would_carry_nothing_or_the_unknown_are_refused(built, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = one_line_error(command("zooserve", "bento", "build", "--models", str(empty),
                                  home=built.home))
    assert line == f"zooserve bento build: error: no models found under '{empty}': " \
                   "nothing to build a Bento of"
    line = one_line_error(command("zooserve", "bento", "build", "--models",
                                  str(built.repository), "--only", "pengiuns", home=built.home))
    assert "no model 'pengiuns'" in line and f"models there: penguins, {TWO_INPUT}" in line
    line = one_line_error(command("bentoml", "build", "--arg", "models=pengiuns",
                                  home=built.home))
    assert "model 'pengiuns' is not in BentoML's model store" in line
    assert bentos_in(built.home) == [built.tag]


def test_a_store_backed_server_with_no_models_is_unready(tmp_path):
    env = {"BENTOML_HOME": str(tmp_path / "bentoml"), "ZOOSERVE_MODEL_SOURCE": "store"}
    with run_bento(SERVICE, tmp_path, env, wait_for="/livez") as running:
        assert httpx.get(running.http + "/readyz", timeout=10).status_code == 503
        v2 = httpx.get(running.http + "/v2/health/ready", timeout=10)
        assert (v2.status_code, v2.json()) == (503, {"ready": False})
        with grpc.insecure_channel(running.grpc) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=10
            )
        assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
        reasons = [line for line in running.log().splitlines() if "not ready:" in line]
        assert len(reasons) == 1
        assert "no models to serve" in reasons[0] and "zooserve bento import" in reasons[0]

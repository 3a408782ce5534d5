"""Shared fixtures: a real `zooserve serve` process on a free loopback port, its tritonclient,
and scratch copies of shipped models. The helpers behind them are in tests/helpers/."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.echo_repository import build_echo_repository
from tests.helpers.hostile import run_hostile_server
from tests.helpers.paths import MODELS, STAND_IN_BASE
from tests.helpers.registry import RunningRegistry, registry_for_tests
from tests.helpers.server import RunningServer, run_server


def pytest_report_header(config) -> str:
    if os.environ.get("ZOOSERVE_SKIP_CONTAINER_TESTS") == "1":
        return "container tests: left out (ZOOSERVE_SKIP_CONTAINER_TESTS=1)"
    return (f"container tests: images built FROM {STAND_IN_BASE}, a STAND-IN made by "
            "scripts/image-base (debootstrap bookworm + Debian's python3), not "
            "python:3.11-slim-bookworm")


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Iterator[RunningServer]:
    """One server on the shipped model repository, shared by the protocol tests."""
    with run_server(MODELS, tmp_path_factory.mktemp("server")) as running:
        yield running


@pytest.fixture(scope="session")
def triton(server):
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(server.url)
    yield client
    client.close()


@pytest.fixture(scope="session")
def echo_zoo_server(tmp_path_factory) -> Iterator[RunningServer]:
    """A server on penguins, spectra_similarity and an Identity model per datatype
    (tests/helpers/echo_repository.py), shared by the malformed-request corpora."""
    tmp = tmp_path_factory.mktemp("echo-zoo")
    with run_server(build_echo_repository(tmp / "models"), tmp) as running:
        yield running


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Iterator[RunningServer]:
    """A server with short HTTP limits (tests/helpers/hostile.py), one per test module of
    the hostile-HTTP tests."""
    with run_hostile_server(tmp_path_factory.mktemp("hostile")) as running:
        yield running


@pytest.fixture()
def copy_model(tmp_path):
    """Copy a shipped model version into a scratch repository under a chosen name/version."""

    def copy(name: str, version: int = 1, as_name: str | None = None, as_version: int | None = None,
             repo: Path | None = None) -> Path:
        repo = repo or tmp_path / "models"
        target = repo / (as_name or name) / str(as_version or version)
        shutil.copytree(MODELS / name / str(version), target)
        return repo

    return copy


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Iterator[RunningRegistry]:
    """A real OCI registry (distribution 2.8) on loopback: TLS from a throwaway CA and
    htpasswd authentication (tests/helpers/registry.py)."""
    with registry_for_tests(tmp_path_factory.mktemp("registry")) as running:
        yield running


@pytest.fixture(scope="session")
def plain_registry(tmp_path_factory) -> Iterator[RunningRegistry]:
    """The same registry over plain HTTP without authentication (`--plain-http`)."""
    with registry_for_tests(tmp_path_factory.mktemp("plain-registry"), tls=False) as running:
        yield running


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory) -> Iterator[RunningRegistry]:
    """The registry with bearer-token authentication: a token service in the test process
    issues the tokens (tests/helpers/token_service.py)."""
    with registry_for_tests(tmp_path_factory.mktemp("token-registry"), token=True) as running:
        yield running

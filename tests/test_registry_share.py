"""Sharing through a real OCI registry (docker-registry on loopback, TLS and htpasswd): the
zoo's models and a library pushed with `zooserve push`, pulled into an empty repository with
`zooserve pull`, served, and answering byte for byte as the originals do; what ORAS and
skopeo (clients others wrote) read of the artifacts; and every refusal, each one line, with
nothing written and a polling server serving on."""

from __future__ import annotations

import json
import subprocess

import oras.provider
import pytest
import tritonclient.grpc as grpcclient

from tests.helpers.paths import MODELS
from tests.helpers.registry import PASSWORD, USER
from tests.helpers.registry_share import answers, pull, push, registry_env
from tests.helpers.server import run_server
from zooserve.registry import annotations as keys

# Every zoo model but the embedding model, which travels inside the library's artifact.
SHARED = ["penguins", "weather", "digits", "digits_transfer", "spectra_similarity",
          "spectra_search"]


@pytest.fixture(scope="module")
def pushed(registry):
    """The zoo pushed once for the module: model name -> the push's output line."""
    lines = {}
    for name in SHARED:
        done = push(registry, name, f"zoo/{name}:1")
        assert done.returncode == 0, done.stderr
        lines[name] = done.stdout.strip()
    return lines


def test_pulled_zoo_answers_byte_for_byte_as_the_original(pushed, registry, server, tmp_path):
    target = tmp_path / "received"
    done = pull(registry, *(f"zoo/{name}:1" for name in SHARED),
                extra=("--models", str(target)))
    assert done.returncode == 0, done.stderr
    assert "its embedding model into" in done.stdout
    assert sorted(p.name for p in target.iterdir()) == sorted([*SHARED, "spectra_embedding"])
    for name in [*SHARED, "spectra_embedding"]:
        for original in (MODELS / name / "1").iterdir():
            assert (target / name / "1" / original.name).read_bytes() == original.read_bytes()
    with run_server(target, tmp_path) as received:
        theirs = grpcclient.InferenceServerClient(received.url)
        ours = grpcclient.InferenceServerClient(server.url)
        for name in [*SHARED, "spectra_embedding"]:
            assert answers(theirs, name) == answers(ours, name), name


def test_annotations_say_what_the_card_says_and_skopeo_reads_them(pushed, registry):
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", "--creds", f"{USER}:{PASSWORD}",
         "--cert-dir", str(registry.cert_dir()), f"docker://{registry.host}/zoo/penguins:1"],
        capture_output=True, text=True, timeout=60)
    assert raw.returncode == 0, raw.stderr
    manifest = json.loads(raw.stdout)
    card = json.loads((MODELS / "penguins" / "1" / "card.json").read_text())
    annotations = manifest["annotations"]
    assert manifest["artifactType"] == "application/vnd.zooserve.model.v1"
    assert annotations[keys.DESCRIPTION] == card["description"]
    assert annotations[keys.CREATED] == card["created"]
    assert annotations[keys.VERSION] == "1"
    assert annotations[keys.METRICS].startswith(f"accuracy={card['metrics']['accuracy']:.4g}")
    files = json.loads(annotations[keys.FILES])
    assert files["model.onnx"] == card["onnx"]["sha256"]
    titles = sorted(layer["annotations"]["org.opencontainers.image.title"]
                    for layer in manifest["layers"])
    assert titles == sorted(p.name for p in (MODELS / "penguins" / "1").iterdir())


def test_oras_pulls_the_same_files(pushed, registry, tmp_path):
    client = oras.provider.Registry(hostname=registry.host, tls_verify=str(registry.pki.ca),
                                    auth_backend="basic")
    client.login(username=USER, password=PASSWORD, hostname=registry.host)
    folder = tmp_path / "oras"
    client.pull(target=f"{registry.host}/zoo/weather:1", outdir=str(folder))
    for original in (MODELS / "weather" / "1").iterdir():
        assert (folder / original.name).read_bytes() == original.read_bytes()


def test_plain_http_registry_without_credentials(plain_registry, tmp_path):
    done = push(plain_registry, "penguins", "shared/penguins")
    assert done.returncode == 0, done.stderr
    assert f"{plain_registry.host}/shared/penguins:1@sha256:" in done.stdout  # the version tag
    target = tmp_path / "models"
    done = pull(plain_registry, "shared/penguins:1", extra=("--models", str(target)))
    assert done.returncode == 0, done.stderr
    assert (target / "penguins" / "1" / "model.onnx").read_bytes() == \
        (MODELS / "penguins" / "1" / "model.onnx").read_bytes()


def test_credentials_from_the_environment(pushed, registry, tmp_path):
    env = {"DOCKER_CONFIG": str(tmp_path / "none"),
           "ZOOSERVE_REGISTRY_USERNAME": USER, "ZOOSERVE_REGISTRY_PASSWORD": PASSWORD}
    done = pull(registry, "zoo/penguins:1", extra=("--models", str(tmp_path / "m")), env=env)
    assert done.returncode == 0, done.stderr


def test_bearer_token_registry(token_registry, tmp_path):
    """A registry that sends clients to a token service (as Docker Hub and GHCR do)."""
    done = push(token_registry, "penguins", "zoo/penguins")
    assert done.returncode == 0, done.stderr
    target = tmp_path / "models"
    done = pull(token_registry, "zoo/penguins:1", extra=("--models", str(target)))
    assert done.returncode == 0, done.stderr
    assert (target / "penguins" / "1" / "model.onnx").read_bytes() == \
        (MODELS / "penguins" / "1" / "model.onnx").read_bytes()
    status, _ = token_registry.get("/v2/zoo/penguins/tags/list")  # Basic: not accepted here
    assert status == 401
    done = pull(token_registry, "zoo/penguins:1", extra=("--models", str(target)),
                env=registry_env(token_registry, password="wrong"))
    assert done.returncode != 0
    assert "token service refused the credentials" in done.stderr


def test_pulling_again_adds_no_copy(pushed, registry, tmp_path):
    """An init container that runs again pulls into a folder already holding the version."""
    target = tmp_path / "models"
    for _ in range(2):
        done = pull(registry, "zoo/penguins:1", extra=("--models", str(target)))
        assert done.returncode == 0, done.stderr
    assert "is already in" in done.stdout and "nothing to pull" in done.stdout
    assert sorted(p.name for p in (target / "penguins").iterdir()) == ["1"]
    (target / "penguins" / "1" / "training_curves.png").write_bytes(b"changed")
    done = pull(registry, "zoo/penguins:1", extra=("--models", str(target)))
    assert done.returncode == 0 and "into" in done.stdout
    assert sorted(p.name for p in (target / "penguins").iterdir()) == ["1", "2"]

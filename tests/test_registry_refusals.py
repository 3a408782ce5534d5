"""Every refusal of `zooserve pull` (and `push`) against a real registry: each is one line
naming what is wrong, nothing is written into the repository, and a server polling that
repository serves on, unchanged; the pull that is allowed then appears there whole."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from tests.helpers.cli import zooserve
from tests.helpers.paths import MODELS
from tests.helpers.registry import PASSWORD, USER, RunningRegistry
from tests.helpers.registry_share import pull, push, registry_env
from tests.helpers.server import run_server
from tests.helpers.signing_keys import make_key_pair
from zooserve.registry.credentials import Credentials
from zooserve.registry.distribution import OCI_MANIFEST, RegistryClient
from zooserve.repository.layout import record_files


def tree(folder: Path) -> list[str]:
    """Every path under folder, hidden ones included: what a refusal must leave as it was."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def client_of(registry: RunningRegistry) -> RegistryClient:
    return RegistryClient(registry.host, Credentials(USER, PASSWORD, source="test"),
                          ca_file=registry.pki.ca)


def put_altered(registry: RunningRegistry, source: str, target: str, alter) -> None:
    """Copy a pushed manifest to another tag after `alter(manifest)` changed it: what a
    registry (or whoever writes to it) could serve."""
    client = client_of(registry)
    repository, tag = source.split(":")
    _, body, _ = client.get_manifest(repository, tag)
    manifest = json.loads(body)
    alter(manifest)
    target_repository, target_tag = target.split(":")
    client.put_manifest(target_repository, target_tag, json.dumps(manifest).encode(),
                        OCI_MANIFEST)


@pytest.fixture(scope="module")
def shared(registry, tmp_path_factory):
    """penguins, the library, and a unique copy of penguins (its card's description
    changed, so its card's blob is its own to tamper with) pushed once."""
    repo = tmp_path_factory.mktemp("sharer") / "models"
    for name in ("tampered", "oversized"):  # each with a card blob of its own to tamper with
        shutil.copytree(MODELS / "penguins" / "1", repo / name / "1")
        card_path = repo / name / "1" / "card.json"
        card = json.loads(card_path.read_text())
        card["description"] += f" ({name} in the registry)"
        card_path.write_text(json.dumps(card))
    keys = repo.parent / "keys"
    alice, mallory = make_key_pair(keys, "alice"), make_key_pair(keys, "mallory")
    for name, key in (("signed", alice.private), ("changed_after_signing", alice.private),
                      ("signed_by_mallory", mallory.private)):
        shutil.copytree(MODELS / "penguins" / "1", repo / name / "1")
        done = zooserve("sign", name, "--key", str(key), "--models", str(repo))
        assert done.returncode == 0, done.stderr
    # Whoever changes a file after signing can rewrite the card's record of it too: only
    # the signature still tells.
    plot = repo / "changed_after_signing" / "1" / "training_curves.png"
    plot.write_bytes(plot.read_bytes() + b"\0")
    record_files(plot.parent)
    for name, reference, models in (("penguins", "zoo/penguins:1", MODELS),
                                    ("spectra_search", "zoo/spectra_search:1", MODELS),
                                    ("tampered", "zoo/tampered:1", repo),
                                    ("oversized", "zoo/oversized:1", repo),
                                    ("signed", "zoo/signed:1", repo),
                                    ("changed_after_signing", "zoo/changed:1", repo),
                                    ("signed_by_mallory", "zoo/mallory:1", repo)):
        done = push(registry, name, reference, "--models", str(models))
        assert done.returncode == 0, done.stderr
    return repo


@pytest.fixture(scope="module")
def watched(tmp_path_factory):
    """A repository holding penguins 1 and the server polling it."""
    folder = tmp_path_factory.mktemp("receiver")
    repo = folder / "models"
    shutil.copytree(MODELS / "penguins" / "1", repo / "penguins" / "1")
    with run_server(repo, folder, "--model-control", "poll", "--poll-interval", "0.2") as server:
        yield repo, server


def refused(registry, watched, *references, extra=(), env=None) -> str:
    """Pull into the watched repository, expecting a refusal: its one line, after checking
    that nothing was written and the server still answers penguins."""
    repo, server = watched
    before = tree(repo)
    done = pull(registry, *references, extra=("--models", str(repo), *extra), env=env)
    assert done.returncode != 0, done.stdout
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("zooserve pull: error: ")
    print(lines[0])  # the refusal as a user reads it (pytest -s shows them)
    assert tree(repo) == before
    client = grpcclient.InferenceServerClient(server.url)
    assert client.is_model_ready("penguins")
    return lines[0]


def test_wrong_password(registry, shared, watched):
    env = registry_env(registry, password="not-the-password")
    line = refused(registry, watched, "zoo/penguins:1", env=env)
    assert f"{registry.host} refused the credentials" in line and "401" in line


def test_no_credentials(registry, shared, watched, tmp_path):
    line = refused(registry, watched, "zoo/penguins:1",
                   env={"DOCKER_CONFIG": str(tmp_path / "empty")})
    assert "asks for a user name and password and none were found" in line


def test_untrusted_certificate(registry, shared, watched):
    repo, _ = watched
    done = pull(registry, "zoo/penguins:1", extra=("--models", str(repo)))
    assert done.returncode == 0  # trusted with --tls-ca (registry_flags) ...
    assert "is already in" in done.stdout  # (and the watched repository has these files)
    done = zooserve("pull", f"{registry.host}/zoo/penguins:1", "--models", str(repo),
                    env=registry_env(registry))  # ... and not without
    assert done.returncode != 0
    assert "its TLS certificate is not trusted" in done.stderr
    assert "--tls-ca" in done.stderr


def test_plain_http_to_a_tls_registry(registry, shared, watched):
    done = zooserve("pull", f"{registry.host}/zoo/penguins:1", "--plain-http",
                    "--models", str(watched[0]), env=registry_env(registry))
    assert done.returncode != 0 and done.stderr.count("\n") == 1
    assert "it probably speaks HTTPS (leave out --plain-http)" in done.stderr


def test_reference_that_does_not_exist(registry, shared, watched):
    line = refused(registry, watched, "zoo/penguins:no-such-tag")
    assert line.endswith(f"{registry.host} has no zoo/penguins:no-such-tag: 404 "
                         "(MANIFEST_UNKNOWN: manifest unknown)")
    line = refused(registry, watched, "zoo/nobody:1")
    assert "has no zoo/nobody:1: 404" in line


def test_tampered_blob(registry, shared, watched):
    client = client_of(registry)
    _, body, _ = client.get_manifest("zoo/tampered", "1")
    card_layer = next(layer for layer in json.loads(body)["layers"]
                      if layer["annotations"]["org.opencontainers.image.title"] == "card.json")
    blob = registry.blob_path(card_layer["digest"])
    data = bytearray(blob.read_bytes())
    data[-2] ^= 0x01  # same size, one bit changed
    blob.write_bytes(bytes(data))
    line = refused(registry, watched, "zoo/tampered:1")
    assert f"blob {card_layer['digest']} from {registry.host} does not match its digest" in line


def test_blob_longer_than_declared(registry, shared, watched):
    """A registry that sends more than the manifest declares is cut off at the declared
    size: a hostile registry cannot fill the disk through one blob."""
    client = client_of(registry)
    _, body, _ = client.get_manifest("zoo/oversized", "1")
    card_layer = next(layer for layer in json.loads(body)["layers"]
                      if layer["annotations"]["org.opencontainers.image.title"] == "card.json")
    blob = registry.blob_path(card_layer["digest"])
    blob.write_bytes(blob.read_bytes() + b"x" * 100_000)
    line = refused(registry, watched, "zoo/oversized:1")
    assert f"sent more than the {card_layer['size']} bytes declared" in line


def test_library_without_its_embedding_model(registry, shared, watched):
    def drop_model(manifest):
        manifest["layers"] = [layer for layer in manifest["layers"]
                              if "io.zooserve.embedding-model.file" not in layer["annotations"]]

    put_altered(registry, "zoo/spectra_search:1", "zoo/spectra_search:bare", drop_model)
    line = refused(registry, watched, "zoo/spectra_search:bare")
    assert "is a library built with spectra_embedding version 1" in line
    assert "which neither the artifact carries nor" in line


def test_library_whose_model_number_is_taken(registry, shared, watched):
    repo, _ = watched
    taken = repo / "spectra_embedding" / "1"
    shutil.copytree(MODELS / "spectra_similarity" / "1", taken)
    try:
        line = refused(registry, watched, "zoo/spectra_search:1")
        assert "holds another spectra_embedding version 1" in line
    finally:
        shutil.rmtree(taken.parent)


@pytest.mark.parametrize(("title", "said"), [
    ("../../outside.onnx", "is not a safe relative file path"),
    ("/etc/passwd", "is not a safe relative file path"),
    (".hidden", "is not a safe relative file path"),
])
def test_hostile_file_names(registry, shared, watched, title, said):
    def rename_first(manifest):
        manifest["layers"][0]["annotations"]["org.opencontainers.image.title"] = title

    put_altered(registry, "zoo/penguins:1", "zoo/penguins:hostile", rename_first)
    line = refused(registry, watched, "zoo/penguins:hostile")
    assert said in line


def test_layers_that_differ_from_the_recorded_files(registry, shared, watched):
    def drop_plot(manifest):
        manifest["layers"] = [layer for layer in manifest["layers"] if not layer[
            "annotations"]["org.opencontainers.image.title"].endswith(".png")]

    put_altered(registry, "zoo/penguins:1", "zoo/penguins:short", drop_plot)
    line = refused(registry, watched, "zoo/penguins:short")
    assert "the layers do not match the files its annotations record" in line


def test_a_container_image_is_not_an_artifact(registry, shared, watched):
    def as_index(manifest):
        manifest.pop("artifactType")

    put_altered(registry, "zoo/penguins:1", "zoo/penguins:untyped", as_index)
    line = refused(registry, watched, "zoo/penguins:untyped")
    assert "is not a zooserve model artifact" in line


def test_push_refusals(registry, shared):
    done = push(registry, "nobody", "zoo/nobody")
    assert done.returncode != 0 and "no model 'nobody' under" in done.stderr
    done = push(registry, "penguins:9", "zoo/penguins")
    assert done.returncode != 0 and "model 'penguins' has no version 9" in done.stderr
    done = push(registry, "penguins", "Zoo/Penguins")
    assert done.returncode != 0 and "is not a repository name" in done.stderr
    done = push(registry, "penguins", "zoo/penguins", env=registry_env(registry, "wrong"))
    assert done.returncode != 0 and "refused the credentials" in done.stderr


def test_the_allowed_pull_appears_whole_in_the_polling_server(registry, shared, watched):
    repo, server = watched
    done = pull(registry, "zoo/spectra_search:1", extra=("--models", str(repo)))
    assert done.returncode == 0, done.stderr
    client = grpcclient.InferenceServerClient(server.url)
    deadline = time.monotonic() + 60
    while not client.is_model_ready("spectra_search"):
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.1)
    assert client.is_model_ready("spectra_embedding", "1")
    assert not [line for line in server.log().splitlines() if "failed" in line.lower()]


def alice_key(shared: Path) -> str:
    return str(shared.parent / "keys" / "alice.pem")


def test_signed_model_verifies(registry, shared, tmp_path):
    target = tmp_path / "models"
    done = pull(registry, "zoo/signed:1",
                extra=("--models", str(target), "--verify-key", alice_key(shared)))
    assert done.returncode == 0, done.stderr
    assert "signature verified" in done.stdout
    assert (target / "signed" / "1" / "model.sig").is_file()


def test_unsigned_model_under_verify_key(registry, shared, watched):
    line = refused(registry, watched, "zoo/penguins:1", extra=("--verify-key", alice_key(shared)))
    assert line.endswith("unsigned: its folder has no model.sig")


def test_signed_by_another_key(registry, shared, watched):
    line = refused(registry, watched, "zoo/mallory:1", extra=("--verify-key", alice_key(shared)))
    assert "signed by none of the given keys" in line


def test_file_changed_after_signing(registry, shared, watched):
    line = refused(registry, watched, "zoo/changed:1", extra=("--verify-key", alice_key(shared)))
    assert "training_curves.png" in line and "card.json" in line
    assert "not the file its card records" not in line  # the card was rewritten to match


def test_missing_verify_key(registry, shared, watched, tmp_path):
    line = refused(registry, watched, "zoo/signed:1",
                   extra=("--verify-key", str(tmp_path / "nobody.pem")))
    assert "--verify-key" in line and "does not exist" in line

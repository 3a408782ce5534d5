"""Where `zooserve push` and `pull` find credentials (Docker's config.json, its credential
helpers, the environment) and how they read references, in process: the subtle parts of the
registry client that the registry tests reach only one way each."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from zooserve.registry.credentials import CredentialsError, find_credentials
from zooserve.registry.reference import BadReference, parse_reference

HOST = "registry.example.org:5000"


@pytest.fixture()
def docker_config(tmp_path, monkeypatch):
    monkeypatch.delenv("ZOOSERVE_REGISTRY_USERNAME", raising=False)
    monkeypatch.delenv("ZOOSERVE_REGISTRY_PASSWORD", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))

    def write(config: dict | str) -> None:
        text = config if isinstance(config, str) else json.dumps(config)
        (tmp_path / "config.json").write_text(text)

    return write


def test_docker_login_entry(docker_config):
    docker_config({"auths": {HOST: {"auth": base64.b64encode(b"alice:s3:cret").decode()}}})
    found = find_credentials(HOST)
    assert (found.username, found.password) == ("alice", "s3:cret")  # split at the first ':'
    assert "s3:cret" not in repr(found)


def test_entry_with_scheme_and_plain_fields(docker_config):
    docker_config({"auths": {f"https://{HOST}": {"username": "bob", "password": "pw"}}})
    assert find_credentials(HOST).username == "bob"
    assert find_credentials("other.example.org") is None


def test_identity_token(docker_config):
    docker_config({"auths": {HOST: {"identitytoken": "refresh-me"}}})
    assert find_credentials(HOST).identity_token == "refresh-me"


def test_docker_hub_keys(docker_config):
    docker_config({"auths": {"https://index.docker.io/v1/": {"username": "c", "password": "d"}}})
    assert find_credentials("docker.io").username == "c"


def test_environment_wins_and_needs_both(docker_config, monkeypatch):
    docker_config({"auths": {HOST: {"username": "bob", "password": "pw"}}})
    monkeypatch.setenv("ZOOSERVE_REGISTRY_USERNAME", "carol")
    with pytest.raises(CredentialsError, match="set both"):
        find_credentials(HOST)
    monkeypatch.setenv("ZOOSERVE_REGISTRY_PASSWORD", "pw2")
    assert find_credentials(HOST).username == "carol"


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_broken_config_is_one_line(docker_config, text):
    docker_config(text)
    with pytest.raises(CredentialsError) as raised:
        find_credentials(HOST)
    assert "\n" not in str(raised.value) and "config.json" in str(raised.value)


def _helper(folder, name: str, answers: dict) -> None:
    """A docker-credential-<name> program, speaking the helper protocol: the host on stdin,
    JSON on stdout, exit 1 when it knows nothing."""
    script = folder / f"docker-credential-{name}"
    script.write_text("#!/bin/sh\nread host\ncase \"$host\" in\n" + "".join(
        f"  {host}) echo '{json.dumps(value)}' ;;\n" for host, value in answers.items())
        + "  *) echo 'credentials not found' >&2; exit 1 ;;\nesac\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_credential_helpers(docker_config, tmp_path, monkeypatch):
    _helper(tmp_path, "lab", {HOST: {"Username": "dana", "Secret": "from-helper"}})
    _helper(tmp_path, "store", {"other.example.org": {"Username": "<token>", "Secret": "tok"}})
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    docker_config({"credHelpers": {HOST: "lab"}, "credsStore": "store"})
    found = find_credentials(HOST)
    assert (found.username, found.password) == ("dana", "from-helper")
    assert find_credentials("other.example.org").identity_token == "tok"
    assert find_credentials("unknown.example.org") is None


def test_a_helper_that_is_not_there(docker_config):
    docker_config({"credHelpers": {HOST: "missing-helper"}})
    with pytest.raises(CredentialsError, match="docker-credential-missing-helper"):
        find_credentials(HOST)


@pytest.mark.parametrize(("text", "host", "repository", "tag", "digest"), [
    ("127.0.0.1:5000/zoo/penguins:1", "127.0.0.1:5000", "zoo/penguins", "1", None),
    ("localhost/penguins", "localhost", "penguins", None, None),
    ("ghcr.io/lab/models/penguins", "ghcr.io", "lab/models/penguins", None, None),
    ("penguins:2", "docker.io", "library/penguins", "2", None),
    ("lab/penguins@sha256:" + "a" * 64, "docker.io", "lab/penguins", None, "sha256:" + "a" * 64),
])
def test_references(text, host, repository, tag, digest):
    reference = parse_reference(text)
    assert (reference.host, reference.repository, reference.tag, reference.digest) == \
        (host, repository, tag, digest)


@pytest.mark.parametrize(("text", "said"), [
    ("", "is not an image reference"),
    ("Lab/Penguins", "is not a repository name"),
    ("ghcr.io/lab/penguins:bad tag", "is not an image reference"),
    ("ghcr.io/lab/penguins:-x", "is not a tag"),
    ("ghcr.io/lab/penguins@sha256:123", "the digest after '@'"),
    ("a" * 600, "is not an image reference"),
])
def test_bad_references(text, said):
    with pytest.raises(BadReference, match=said) as raised:
        parse_reference(text)
    assert len(str(raised.value)) < 250

"""Docker and skopeo as the image tests use them (tests/test_model_only_image.py and the
registry round trip of tests/test_container_image.py): the engine scripts/test starts, a
`docker login` into a folder of its own, and skopeo reading an image back from the test
registry (tests/helpers/registry.py) with its throwaway CA and htpasswd credentials."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT
from tests.helpers.registry import PASSWORD, USER, RunningRegistry

DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
SKOPEO = "skopeo"

skip_without_containers = pytest.mark.skipif(
    os.environ.get("ZOOSERVE_SKIP_CONTAINER_TESTS") == "1",
    reason="ZOOSERVE_SKIP_CONTAINER_TESTS=1")


def docker(*args: str, check: bool = True, timeout: float = 600,
           stdin: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run([DOCKER, *args], capture_output=True, text=True, timeout=timeout,
                          input=stdin)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


def require_engine() -> str:
    """The engine's version; fails the test, saying what to do, when none answers."""
    done = subprocess.run([DOCKER, "info", "--format", "{{.ServerVersion}}"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(
            f"no Docker engine answers {DOCKER} ({done.stderr.strip()}); scripts/test starts "
            "one as root, or set ZOOSERVE_SKIP_CONTAINER_TESTS=1 to leave these tests out"
        )
    return done.stdout.strip()


def docker_login(registry: RunningRegistry, config: Path,
                 password: str = PASSWORD) -> subprocess.CompletedProcess:
    """`docker login` to the registry, writing its credentials into `config` (a folder of
    this test's, never the user's ~/.docker). The engine takes 127.0.0.0/8 as an insecure
    registry: it speaks TLS without checking the throwaway CA."""
    config.mkdir(parents=True, exist_ok=True)
    return docker("--config", str(config), "login", registry.host, "--username", USER,
                  "--password-stdin", check=False, stdin=password, timeout=60)


def image_size(image: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image).stdout)


def image_labels(image: str) -> dict[str, str]:
    return json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}",
                             image).stdout) or {}


def build_model_image(tag: str, *models: str) -> str:
    """`zooserve image build --model-only` of the project's models; prints its last line."""
    done = subprocess.run(
        [sys.executable, "-m", "zooserve", "image", "build", "--model-only", "--models",
         *models, "--tag", tag],
        capture_output=True, text=True, cwd=ROOT, env={**os.environ, "DOCKER": DOCKER},
    )
    assert done.returncode == 0, done.stdout + done.stderr[-4000:]
    # The last line names the tag and the size: `zooserve-model-penguins:1  0.05 MB  built ...`.
    last = done.stdout.strip().splitlines()[-1]
    assert last.startswith(tag), done.stdout
    print(last)
    return tag


def saved_layers(image: str, folder: Path) -> list[list[tarfile.TarInfo]]:
    """The members of each layer of the image as `docker save` writes it, bottom first."""
    archive = folder / "saved.tar"
    docker("save", "--output", str(archive), image)
    with tarfile.open(archive) as saved:
        manifest = json.load(saved.extractfile("manifest.json"))
        layers = []
        for path in manifest[0]["Layers"]:
            with tarfile.open(fileobj=saved.extractfile(path)) as layer:
                layers.append(layer.getmembers())
    return layers


# ---------------------------------------------------------------- skopeo, from the registry


def skopeo(*args: str) -> subprocess.CompletedProcess:
    if shutil.which(SKOPEO) is None:
        pytest.skip("no skopeo on PATH (scripts/test installs Debian's)")
    done = subprocess.run([SKOPEO, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"skopeo {' '.join(args)} failed:\n{done.stderr}"
    return done


def _trust(registry: RunningRegistry, folder: Path) -> list[str]:
    """skopeo's flags to trust the registry's CA (a cert dir holding it as ca.crt) and log
    in; plain HTTP without credentials for a registry without TLS."""
    if not registry.tls:
        return ["--tls-verify=false"]
    certs = folder / "registry-certs"
    certs.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(registry.pki.ca, certs / "ca.crt")
    return [f"--cert-dir={certs}", f"--creds={USER}:{PASSWORD}"]


def inspect_remote(registry: RunningRegistry, reference: str, folder: Path) -> dict:
    """`skopeo inspect` of an image in the registry: its labels, layers, digest."""
    done = skopeo("inspect", *_trust(registry, folder), f"docker://{reference}")
    return json.loads(done.stdout)


def copy_remote(registry: RunningRegistry, reference: str, folder: Path) -> tuple[Path, dict]:
    """Copy the image from the registry into an OCI layout with skopeo, every blob fetched
    and its digest checked; the layout and the image's manifest."""
    layout = folder / "oci-layout"
    trust = [flag.replace("--", "--src-", 1) for flag in _trust(registry, folder)]
    skopeo("copy", *trust, f"docker://{reference}", f"oci:{layout}:image")
    index = json.loads((layout / "index.json").read_text())
    return layout, json.loads(_blob(layout, index["manifests"][0]["digest"]).read_text())


def unpack_remote(registry: RunningRegistry, reference: str, folder: Path) -> Path:
    """The image copied from the registry (copy_remote), its layers unpacked bottom first
    into folder/rootfs."""
    layout, manifest = copy_remote(registry, reference, folder)
    rootfs = folder / "rootfs"
    rootfs.mkdir()
    for layer in manifest["layers"]:
        with tarfile.open(_blob(layout, layer["digest"]), mode="r:*") as tar:
            tar.extractall(rootfs, filter="data")
    return rootfs


def _blob(layout: Path, digest: str) -> Path:
    algorithm, hex_digest = digest.split(":", 1)
    return layout / "blobs" / algorithm / hex_digest

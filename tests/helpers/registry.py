"""A real OCI registry for the tests: Debian's `docker-registry` (CNCF distribution 2.8)
serving on a free loopback port, with htpasswd (basic) authentication and TLS from a
throwaway CA, or plain HTTP without authentication (what `--plain-http` is for).

scripts/test installs the package; a test module that needs a registry asks for the
`registry` fixture (tests/conftest.py), which skips with the reason when the binary is not
there (a machine where only `scripts/test -m "not slow"` ever ran still has it: the install
is not Docker's)."""

from __future__ import annotations

import base64
import contextlib
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest

from tests.helpers.pki import Pki, make_pki
from tests.helpers.server import free_port
from tests.helpers.token_service import ISSUER, SERVICE, run_token_service

REGISTRY_BINARY = "docker-registry"
USER = "sharer"
PASSWORD = "zooserve-registry-password-7c1e"
START_TIMEOUT_S = 30


@dataclass
class RunningRegistry:
    host: str  # host:port, as a reference spells it
    process: subprocess.Popen
    log_path: Path
    storage: Path  # the registry's filesystem storage (blobs under docker/registry/v2/blobs)
    pki: Pki | None  # None: plain HTTP, no authentication
    tmp: Path

    @property
    def tls(self) -> bool:
        return self.pki is not None

    def log(self) -> str:
        return self.log_path.read_text()

    def docker_config(self, user: str = USER, password: str = PASSWORD) -> Path:
        """A folder holding a Docker `config.json` with this registry's credentials, as
        `docker login` writes it (for DOCKER_CONFIG)."""
        folder = self.tmp / f"docker-config-{user}-{len(list(self.tmp.glob('docker-config-*')))}"
        folder.mkdir()
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        (folder / "config.json").write_text(json.dumps({"auths": {self.host: {"auth": auth}}}))
        return folder

    def cert_dir(self) -> Path:
        """A folder holding only the CA, as skopeo's and Docker's --cert-dir want it."""
        folder = self.tmp / "cert-dir"
        folder.mkdir(exist_ok=True)
        (folder / "ca.crt").write_bytes(self.pki.ca.read_bytes())
        return folder

    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes on disk (distribution's layout)."""
        algorithm, hex_digest = digest.split(":", 1)
        return (self.storage / "docker/registry/v2/blobs" / algorithm / hex_digest[:2]
                / hex_digest / "data")

    def get(self, path: str, authenticated: bool = True) -> tuple[int, bytes]:
        """GET a registry API path (`/v2/...`) directly: the status and body."""
        scheme = "https" if self.tls else "http"
        request = urllib.request.Request(f"{scheme}://{self.host}{path}")
        if self.tls and authenticated:
            token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=str(self.pki.ca)) if self.pki else None
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()


def registry_for_tests(folder: Path, **options) -> contextlib.AbstractContextManager:
    """run_registry for a fixture, skipping (with the reason) where the binary is missing."""
    if shutil.which(REGISTRY_BINARY) is None:
        pytest.skip("no docker-registry on PATH (scripts/test installs Debian's, as root)")
    return run_registry(folder, **options)


@contextlib.contextmanager
def run_registry(tmp: Path, tls: bool = True, token: bool = False
                 ) -> Iterator[RunningRegistry]:
    """Start a registry on a free loopback port and stop it afterwards; it answers `/v2/`
    (401 without credentials when `tls`, which also turns authentication on) before this
    yields. `token`: bearer tokens from a token service (tests/helpers/token_service.py)
    instead of htpasswd."""
    with contextlib.ExitStack() as stack:
        yield stack.enter_context(_run_registry(tmp, tls, token, stack))


@contextlib.contextmanager
def _run_registry(tmp: Path, tls: bool, token: bool,
                  stack: contextlib.ExitStack) -> Iterator[RunningRegistry]:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    storage = tmp / "storage"
    config: dict = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": "zooserve-test-registry"},
    }
    pki = None
    if tls:
        pki = make_pki(tmp / "pki")
        htpasswd = tmp / "htpasswd"
        hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=5)).decode()
        htpasswd.write_text(f"{USER}:{hashed}\n")
        config["http"]["tls"] = {"certificate": str(pki.server_cert), "key": str(pki.server_key)}
        config["auth"] = {"htpasswd": {"realm": "zooserve-tests", "path": str(htpasswd)}}
        if token:
            service = stack.enter_context(run_token_service(tmp, pki, USER, PASSWORD))
            config["auth"] = {"token": {"realm": service.realm, "service": SERVICE,
                                        "issuer": ISSUER,
                                        "rootcertbundle": str(service.certificate)}}
    # JSON is YAML: no YAML writer needed for the registry's config file.
    config_path = tmp / "registry.yml"
    config_path.write_text(json.dumps(config))
    log_path = tmp / "registry.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([REGISTRY_BINARY, "serve", str(config_path)],
                                   stdout=log, stderr=subprocess.STDOUT)
    running = RunningRegistry(f"127.0.0.1:{port}", process, log_path, storage, pki, tmp)
    try:
        _wait_until_answering(running)
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_answering(running: RunningRegistry) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    expected = 401 if running.tls else 200
    while True:
        if running.process.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {running.process.returncode}:\n"
                               f"{running.log()}")
        try:
            status, _ = running.get("/v2/", authenticated=False)
        except OSError:
            status = None
        if status == expected:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"docker-registry did not answer /v2/ with {expected} within "
                               f"{START_TIMEOUT_S}s (last: {status}):\n{running.log()}")
        time.sleep(0.1)

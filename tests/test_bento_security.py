"""The BentoML service's binding and security: loopback unless told otherwise; TLS and the
bearer token on its HTTP routes and its gRPC port (health open); unusable settings and a
gRPC port that is taken end `bentoml serve` at once with one line, before any worker starts
(a worker that cannot bind used to be restarted for ever, never answering HTTP)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2
from tritonclient.utils import InferenceServerException

from tests.helpers.bento import (
    PENGUINS,
    SERVICE,
    RunningBento,
    make_test_repository,
    run_bento,
)
from tests.helpers.paths import ROOT
from tests.helpers.pki import TOKEN, make_pki, trusting
from tests.helpers.server import free_port
from zooserve.protocol.credentials import tls_credentials
from zooserve.serving.grpc_frontend.health_check import health_status

BEARER = {"authorization": f"Bearer {TOKEN}"}


def bento_env(tmp: Path, repository: Path, **extra: str) -> dict[str, str]:
    return {"BENTOML_HOME": str(tmp / "bentoml"), "ZOOSERVE_MODELS": str(repository),
            "ZOOSERVE_MODEL_SOURCE": "folder", **extra}


def serve_fails(tmp: Path, env: dict[str, str]) -> str:
    """Run `bentoml serve` expecting it to stop by itself; its output."""
    command = [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", "127.0.0.1",
               "--port", str(free_port())]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZOOSERVE_")}
    environment.update({"BENTOML_DO_NOT_TRACK": "True", "ZOOSERVE_HOST": "127.0.0.1", **env})
    try:
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment,
                              timeout=90, start_new_session=True)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"bentoml serve did not stop: {exc.stdout}{exc.stderr}") from None
    assert done.returncode != 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_a_taken_grpc_port_stops_bentoml_serve_with_one_line(tmp_path):
    repository = make_test_repository(tmp_path / "models")
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        output = serve_fails(tmp_path, bento_env(tmp_path, repository,
                                                 ZOOSERVE_GRPC_PORT=str(port)))
    lines = [line for line in output.splitlines() if "zooserve bento: error:" in line]
    assert len(lines) == 1, output
    assert f"cannot listen for gRPC on 127.0.0.1:{port}" in lines[0]
    assert "ZOOSERVE_GRPC_PORT" in lines[0]
    assert "loaded penguins" not in output  # stopped before any worker loaded a model


def test_unusable_security_settings_stop_bentoml_serve_with_one_line(tmp_path):
    repository = make_test_repository(tmp_path / "models")
    (tmp_path / "empty-token").write_text("")
    for extra, fragment in (
        ({"ZOOSERVE_TLS_CERT": str(tmp_path / "server.crt")}, "ZOOSERVE_TLS_KEY"),
        ({"ZOOSERVE_AUTH_TOKEN_FILE": str(tmp_path / "empty-token")}, "is empty"),
    ):
        output = serve_fails(tmp_path, bento_env(tmp_path, repository,
                                                 ZOOSERVE_GRPC_PORT=str(free_port()), **extra))
        lines = [line for line in output.splitlines() if "zooserve bento: error:" in line]
        assert len(lines) == 1 and fragment in lines[0], output


def _service_config(env: dict[str, str]) -> dict:
    """The @bentoml.service config as the module builds it from these variables (in another
    process: the service imports zooserve's generated protobuf, tritonclient is loaded here)."""
    code = ("import json; from zooserve.serving.bento_frontend.service import ZooServe; "
            "print(json.dumps({'http': ZooServe.config['http'], "
            "'ssl': ZooServe.config.get('ssl')}))")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZOOSERVE_")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, env={**environment, "BENTOML_DO_NOT_TRACK": "True", **env},
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_bento_binds_loopback_unless_told_and_takes_the_tls_files(tmp_path):
    pki = make_pki(tmp_path / "pki")
    default = _service_config({"BENTOML_HOME": str(tmp_path / "bentoml")})
    assert default["http"]["host"] == "127.0.0.1"
    assert not (default["ssl"] or {}).get("enabled")
    secure = _service_config({"BENTOML_HOME": str(tmp_path / "bentoml"),
                              "ZOOSERVE_HOST": "0.0.0.0",
                              "ZOOSERVE_TLS_CERT": str(pki.server_cert),
                              "ZOOSERVE_TLS_KEY": str(pki.server_key),
                              "ZOOSERVE_TLS_CLIENT_CA": str(pki.client_ca)})
    assert secure["http"]["host"] == "0.0.0.0"
    assert secure["ssl"]["enabled"] and secure["ssl"]["certfile"] == str(pki.server_cert)
    assert secure["ssl"]["ca_certs"] == str(pki.client_ca) and secure["ssl"]["cert_reqs"] == 2


@pytest.fixture(scope="module")
def secure_bento(tmp_path_factory) -> Iterator[tuple[RunningBento, object]]:
    tmp = tmp_path_factory.mktemp("secure-bento")
    pki = make_pki(tmp / "pki")
    repository = make_test_repository(tmp / "models")
    env = bento_env(tmp, repository, ZOOSERVE_TLS_CERT=str(pki.server_cert),
                    ZOOSERVE_TLS_KEY=str(pki.server_key), ZOOSERVE_AUTH_TOKEN=TOKEN)
    with run_bento(SERVICE, tmp, env, tls=trusting(pki)) as running:
        yield running, pki


def test_bento_http_needs_the_token_but_not_for_health(secure_bento):
    running, pki = secure_bento
    base = running.http.replace("http://", "https://")
    with httpx.Client(base_url=base, verify=trusting(pki), timeout=10) as http:
        for path in ("/livez", "/readyz", "/v2/health/live", "/v2/health/ready"):
            assert http.get(path).status_code == 200, path
        body = {"model": "penguins", "inputs": {"features": PENGUINS}}
        refused = http.post("/predict", json=body)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"].startswith("Bearer")
        assert "missing bearer token" in refused.json()["error"]
        for method, path in (("GET", "/metrics"), ("GET", "/v2/models/penguins"),
                             ("POST", "/models"), ("GET", "/docs.json")):
            assert http.request(method, path).status_code == 401, path
        wrong = http.post("/predict", json=body,
                          headers={"authorization": "Bearer not-the-token-at-all-000"})
        assert wrong.status_code == 401 and TOKEN not in wrong.text
        answered = http.post("/predict", json=body, headers=BEARER)
        assert answered.status_code == 200, answered.text
        assert [p["label"] for p in answered.json()["predictions"]] == \
            ["Adelie", "Chinstrap", "Gentoo"]
        assert http.get("/metrics", headers=BEARER).status_code == 200
    with pytest.raises(httpx.TransportError):  # no plaintext beside TLS
        httpx.get(running.http + "/livez", timeout=5)


def test_bento_grpc_needs_tls_and_the_token_but_not_for_health(secure_bento):
    running, pki = secure_bento
    status = health_status(running.grpc, "", 5, tls_credentials(pki.ca))
    assert status == health_pb2.HealthCheckResponse.ServingStatus.Name(
        health_pb2.HealthCheckResponse.SERVING)
    client = grpcclient.InferenceServerClient(running.grpc, ssl=True,
                                              root_certificates=str(pki.ca))
    tensor = grpcclient.InferInput("features", [3, 4], "FP32")
    tensor.set_data_from_numpy(np.asarray(PENGUINS, dtype=np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("penguins", [tensor])
    assert caught.value.status() == "StatusCode.UNAUTHENTICATED"
    probabilities = client.infer("penguins", [tensor], headers=BEARER).as_numpy("probabilities")
    assert probabilities.argmax(axis=1).tolist() == [0, 1, 2]
    client.close()
    assert "security: TLS on" in running.log() and TOKEN not in running.log()

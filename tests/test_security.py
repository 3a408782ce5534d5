"""TLS, mutual TLS and bearer tokens on a real `zooserve serve`, asked by real clients
(tritonclient over gRPC and HTTP, grpcio, httpx, `zooserve health`), with a throwaway CA
(tests/helpers/pki.py). The refusals of unusable settings and "ONNX only" are in
tests/test_security_refusals.py.

The server runs in its own process, as a user's would; the clients here are other people's
(zooserve.Client's own TLS and token checks are in tests/test_client.py)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers.paths import MODELS, ROOT
from tests.helpers.penguin_rows import LABELS, one_of_each
from tests.helpers.pki import TOKEN, Pki, make_pki, run_tls_server, trusting
from tests.helpers.server import RunningServer, run_server
from zooserve.protocol.credentials import tls_credentials

OTHER_TOKEN = "not-the-zooserve-token-000000"
BEARER = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def penguins_only(tmp_path_factory) -> Path:
    import shutil

    repo = tmp_path_factory.mktemp("repo") / "models"
    shutil.copytree(MODELS / "penguins", repo / "penguins")
    return repo


def https_url(running: RunningServer) -> str:
    return running.http_url.replace("http://", "https://")


def penguin_inputs() -> tuple[list[grpcclient.InferInput], list[str]]:
    features, species = one_of_each()
    tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features.astype(np.float32))
    return [tensor], species


def species_of(result) -> list[str]:
    return [LABELS[i] for i in result.as_numpy("probabilities").argmax(axis=1)]


def grpc_failure(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


def v2_infer_body() -> dict:
    features, _ = one_of_each()
    return {"inputs": [{"name": "features", "datatype": "FP32", "shape": list(features.shape),
                        "data": features.astype(float).ravel().tolist()}]}


def reflect(channel: grpc.Channel, metadata=()) -> reflection_pb2.ServerReflectionResponse:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    return next(iter(stub.ServerReflectionInfo(iter([request]), timeout=5, metadata=metadata)))


# TLS and a token (from a file)


@pytest.fixture(scope="module")
def secure(penguins_only, pki, tmp_path_factory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("secure")
    token_file = tmp / "token"
    token_file.write_text(TOKEN + "\n")  # as `kubectl create secret` files often end
    with run_tls_server(penguins_only, tmp, pki, "--auth-token-file", str(token_file)) as running:
        yield running


@pytest.fixture(scope="module")
def triton_tls(secure, pki):
    client = grpcclient.InferenceServerClient(secure.url, ssl=True,
                                              root_certificates=str(pki.ca))
    yield client
    client.close()


def test_tls_and_token_give_an_inference(triton_tls):
    inputs, species = penguin_inputs()
    result = triton_tls.infer("penguins", inputs, headers=BEARER)
    assert species_of(result) == species


def test_the_startup_line_says_what_is_on_without_the_token(secure):
    log = secure.log()
    line = next(line for line in log.splitlines() if "security:" in line)
    assert "TLS on" in line and "bearer-token authentication on" in line
    assert "gRPC server listening on" in log and "(TLS)" in log
    assert TOKEN not in log


def test_no_token_is_unauthenticated(triton_tls):
    inputs, _ = penguin_inputs()
    error = grpc_failure(lambda: triton_tls.infer("penguins", inputs))
    assert error.status() == "StatusCode.UNAUTHENTICATED"
    assert "missing bearer token" in error.message()
    error = grpc_failure(lambda: triton_tls.get_model_metadata("penguins"))
    assert error.status() == "StatusCode.UNAUTHENTICATED"


def test_a_wrong_token_is_unauthenticated_and_not_echoed(triton_tls):
    inputs, _ = penguin_inputs()
    for headers in ({"authorization": f"Bearer {OTHER_TOKEN}"},
                    {"authorization": f"Basic {TOKEN}"},
                    {"authorization": TOKEN}):
        error = grpc_failure(lambda headers=headers: triton_tls.infer("penguins", inputs,
                                                                      headers=headers))
        assert error.status() == "StatusCode.UNAUTHENTICATED"
        assert TOKEN not in error.message() and OTHER_TOKEN not in error.message()
    assert triton_tls.is_server_ready(headers=BEARER)


def test_streaming_needs_the_token_too(triton_tls, secure, pki):
    """ModelStreamInfer is stream-stream: the refusal must be a stream's refusal."""
    inputs, species = penguin_inputs()
    results: list = []
    triton_tls.start_stream(callback=lambda result, error: results.append((result, error)),
                            headers={"authorization": f"Bearer {OTHER_TOKEN}"})
    # The refusal may end the stream before the request is even queued.
    with contextlib.suppress(InferenceServerException):
        triton_tls.async_stream_infer("penguins", inputs)
    triton_tls.stop_stream()
    (result, error), = results
    assert result is None and error.status() == "StatusCode.UNAUTHENTICATED"
    assert error.message() and "wrong bearer token" in error.message()

    results.clear()
    triton_tls.start_stream(callback=lambda result, error: results.append((result, error)),
                            headers=BEARER)
    triton_tls.async_stream_infer("penguins", inputs)
    triton_tls.stop_stream()
    (result, error), = results
    assert error is None and species_of(result) == species


def test_health_needs_no_token(secure, pki):
    credentials = tls_credentials(pki.ca)
    with grpc.secure_channel(secure.url, credentials) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "penguins"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_the_token(secure, pki):
    with grpc.secure_channel(secure.url, tls_credentials(pki.ca)) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            reflect(channel)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        names = {s.name for s in reflect(channel, tuple(BEARER.items()))
                 .list_services_response.service}
        assert "inference.GRPCInferenceService" in names


def test_repository_control_needs_the_token(triton_tls):
    error = grpc_failure(lambda: triton_tls.load_model("penguins"))
    assert error.status() == "StatusCode.UNAUTHENTICATED"
    error = grpc_failure(lambda: triton_tls.unload_model("penguins"))
    assert error.status() == "StatusCode.UNAUTHENTICATED"
    # With the token the call is the repository extension's to answer, not the gate's.
    for call in (lambda: triton_tls.load_model("no_such_model", headers=BEARER),
                 lambda: triton_tls.unload_model("no_such_model", headers=BEARER)):
        try:
            call()
        except InferenceServerException as exc:
            assert exc.status() not in ("StatusCode.UNAUTHENTICATED",
                                        "StatusCode.PERMISSION_DENIED"), exc.message()
    assert triton_tls.is_model_ready("penguins", headers=BEARER)


def test_a_plaintext_client_cannot_talk_to_a_tls_port(secure):
    client = grpcclient.InferenceServerClient(secure.url)
    error = grpc_failure(lambda: client.is_server_live(headers=BEARER, client_timeout=5))
    assert error.status() in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
    client.close()
    with pytest.raises(httpx.TransportError):
        httpx.get(secure.http_url + "/v2/health/live", timeout=5)


def test_a_client_that_does_not_trust_the_ca_is_refused(secure, pki):
    """The server's certificate is checked: a client trusting another CA does not connect."""
    client = grpcclient.InferenceServerClient(secure.url, ssl=True,
                                              root_certificates=str(pki.client_ca))
    error = grpc_failure(lambda: client.is_server_live(headers=BEARER, client_timeout=5))
    assert error.status() in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
    client.close()


def test_http_401_without_the_token_200_with_it(secure, pki):
    with httpx.Client(base_url=https_url(secure), verify=trusting(pki), timeout=10) as http:
        for path in ("/v2", "/v2/models/penguins", "/v2/models/penguins/ready"):
            refused = http.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Bearer")
            assert "missing bearer token" in refused.json()["error"]
        wrong = http.post("/v2/models/penguins/infer", json=v2_infer_body(),
                          headers={"authorization": f"Bearer {OTHER_TOKEN}"})
        assert wrong.status_code == 401
        assert wrong.json() == {"error": "wrong bearer token"}
        assert 'error="invalid_token"' in wrong.headers["www-authenticate"]
        answered = http.post("/v2/models/penguins/infer", json=v2_infer_body(), headers=BEARER)
        assert answered.status_code == 200, answered.text
        assert answered.json()["outputs"][0]["name"] == "probabilities"
        assert http.post("/v2/repository/models/penguins/load").status_code == 401


def test_http_health_routes_are_open(secure, pki):
    with httpx.Client(base_url=https_url(secure), verify=trusting(pki), timeout=10) as http:
        assert http.get("/v2/health/live").json() == {"live": True}
        assert http.get("/v2/health/ready").json() == {"ready": True}


def test_tritonclient_http_over_tls_with_a_token(secure, pki):
    url = https_url(secure).removeprefix("https://")
    client = httpclient.InferenceServerClient(url, ssl=True,
                                              ssl_options={"ca_certs": str(pki.ca)})
    try:
        assert client.is_server_live()  # health: no token
        with pytest.raises(InferenceServerException) as caught:
            client.get_model_metadata("penguins")
        assert "missing bearer token" in caught.value.message()
        assert client.get_model_metadata("penguins", headers=BEARER)["name"] == "penguins"
        features, species = one_of_each()
        tensor = httpclient.InferInput("features", list(features.shape), "FP32")
        tensor.set_data_from_numpy(features.astype(np.float32), binary_data=False)
        output = httpclient.InferRequestedOutput("probabilities", binary_data=False)
        result = client.infer("penguins", [tensor], outputs=[output], headers=BEARER)
        assert species_of(result) == species
    finally:
        client.close()


def test_zooserve_health_speaks_tls(secure, pki):
    def health(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "zooserve", "health", "--url", secure.url,
                               "--timeout", "5", *flags],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)

    done = health("--tls-ca", str(pki.ca))
    assert done.returncode == 0 and done.stdout.strip() == "SERVING", done.stderr
    # As a Kubernetes exec probe asks: localhost, a certificate naming another host.
    done = health("--tls-ca", str(pki.ca), "--tls-server-name", "localhost")
    assert done.returncode == 0, done.stderr
    plaintext = health()
    assert plaintext.returncode != 0 and "zooserve health: error:" in plaintext.stderr


def test_the_secure_kubernetes_overlay(secure, pki, tmp_path):
    """deploy/k8s/overlays/cpu-secure renders and validates; it mounts the TLS and token
    Secrets where the settings point; its probes are `zooserve health` over TLS, and that
    exact command (the CA path swapped for the test's) gets SERVING from a TLS server."""
    import os

    import yaml

    from tests.helpers import manifests

    docs = manifests.render(manifests.kubectl_path(),
                            manifests.DEPLOY / "k8s" / "overlays" / "cpu-secure")
    for name, (check, variants) in manifests.CHECKS.items():
        if "cpu" in variants and name not in ("probes", "service_ports"):
            assert check(docs, "cpu") == [], name
    pods = manifests.workload(docs)
    env = manifests.env_of(pods.container)
    mounts = pods.container["volumeMounts"]
    volumes = {v["name"]: v for v in pods.pod["volumes"]}

    def secret_behind(path: str) -> str:
        (mount,) = [m for m in mounts if path.startswith(m["mountPath"].rstrip("/") + "/")]
        assert mount.get("readOnly") is True
        return volumes[mount["name"]]["secret"]["secretName"]

    assert secret_behind(env["ZOOSERVE_TLS_CERT"]["value"]) == "zooserve-tls"
    assert secret_behind(env["ZOOSERVE_TLS_KEY"]["value"]) == "zooserve-tls"
    assert secret_behind(env["ZOOSERVE_AUTH_TOKEN_FILE"]["value"]) == "zooserve-token"
    assert "ZOOSERVE_AUTH_TOKEN" not in env  # a token never sits in the manifest
    commands = []
    for probe in manifests.PROBES:
        assert "grpc" not in pods.container[probe], probe  # the kubelet's cannot do TLS
        command = pods.container[probe]["exec"]["command"]
        assert command[:2] == ["zooserve", "health"]
        assert secret_behind(command[command.index("--tls-ca") + 1]) == "zooserve-tls"
        commands.append(command)
    ports = {p["name"]: p["appProtocol"] for p in manifests.the(docs, "Service")["spec"]["ports"]}
    assert ports == {"grpc": "https", "http": "https", "metrics": "http"}

    rendered = tmp_path / "cpu-secure.yaml"
    rendered.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    validated = manifests.kubernetes_validate(rendered)
    assert validated.returncode == 0, validated.stdout + validated.stderr

    probe = list(commands[0])
    probe[probe.index("--tls-ca") + 1] = str(pki.ca)
    environment = {**os.environ, "ZOOSERVE_GRPC_PORT": secure.url.rsplit(":", 1)[1]}
    done = subprocess.run([sys.executable, "-m", "zooserve", *probe[1:]], capture_output=True,
                          text=True, cwd=ROOT, env=environment, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "SERVING", done.stderr


# Mutual TLS, no token: client certificates required; repository control refused


@pytest.fixture(scope="module")
def mutual(penguins_only, pki, tmp_path_factory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("mutual")
    with run_tls_server(penguins_only, tmp, pki, "--tls-client-ca", str(pki.client_ca),
                        mutual=True) as running:
        yield running


def test_mutual_tls_needs_a_client_certificate(mutual, pki):
    inputs, species = penguin_inputs()
    without = grpcclient.InferenceServerClient(mutual.url, ssl=True,
                                               root_certificates=str(pki.ca))
    error = grpc_failure(lambda: without.infer("penguins", inputs, client_timeout=5))
    assert error.status() in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
    without.close()

    stranger = grpcclient.InferenceServerClient(
        mutual.url, ssl=True, root_certificates=str(pki.ca),
        private_key=str(pki.stranger_key), certificate_chain=str(pki.stranger_cert))
    error = grpc_failure(lambda: stranger.infer("penguins", inputs, client_timeout=5))
    assert error.status() in ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
    stranger.close()

    with_cert = grpcclient.InferenceServerClient(
        mutual.url, ssl=True, root_certificates=str(pki.ca),
        private_key=str(pki.client_key), certificate_chain=str(pki.client_cert))
    assert species_of(with_cert.infer("penguins", inputs)) == species  # no token configured
    with_cert.close()


def test_mutual_tls_over_http(mutual, pki):
    with pytest.raises(httpx.TransportError), httpx.Client(verify=trusting(pki)) as http:
        http.get(https_url(mutual) + "/v2/models/penguins", timeout=5)
    stranger = trusting(pki, pki.stranger_cert, pki.stranger_key)
    with pytest.raises(httpx.TransportError), httpx.Client(verify=stranger) as http:
        http.get(https_url(mutual) + "/v2/models/penguins", timeout=5)
    with httpx.Client(verify=trusting(pki, pki.client_cert, pki.client_key),
                      timeout=10) as http:
        response = http.post(https_url(mutual) + "/v2/models/penguins/infer",
                             json=v2_infer_body())
        assert response.status_code == 200, response.text


def test_mutual_tls_startup_line(mutual):
    line = next(line for line in mutual.log().splitlines() if "security:" in line)
    assert "client certificates required" in line and "authentication off" in line


# Plaintext, no token, reflection off (as a developer might run it)


@pytest.fixture(scope="module")
def plain(penguins_only, tmp_path_factory) -> Iterator[RunningServer]:
    tmp = tmp_path_factory.mktemp("plain")
    with run_server(penguins_only, tmp, "--reflection", "false") as running:
        yield running


def test_reflection_can_be_turned_off(plain):
    with grpc.insecure_channel(plain.url) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            reflect(channel)
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_repository_control_without_a_configured_token_is_refused(plain):
    client = grpcclient.InferenceServerClient(plain.url)
    for call in (lambda: client.load_model("penguins"),
                 lambda: client.unload_model("penguins"),
                 lambda: client.load_model("penguins", headers=BEARER)):
        error = grpc_failure(call)
        assert error.status() == "StatusCode.PERMISSION_DENIED"
        assert "ZOOSERVE_AUTH_TOKEN" in error.message()
        assert "--auth-token-file" in error.message()
    inputs, species = penguin_inputs()
    assert species_of(client.infer("penguins", inputs)) == species  # the rest is open
    client.close()
    with httpx.Client(base_url=plain.http_url, timeout=10) as http:
        for verb in ("load", "unload"):
            refused = http.post(f"/v2/repository/models/penguins/{verb}", json={})
            assert refused.status_code == 403
            assert "ZOOSERVE_AUTH_TOKEN" in refused.json()["error"]
        assert http.post("/v2/models/penguins/infer", json=v2_infer_body()).status_code == 200


def test_the_startup_line_says_security_is_off(plain):
    line = next(line for line in plain.log().splitlines() if "security:" in line)
    assert "TLS off" in line and "authentication off" in line
    assert "reflection off" in line and "docs/security.md" in line


# Workers: each worker serves with the same TLS and token (from the environment)


def test_workers_serve_tls_and_the_token(penguins_only, pki, tmp_path):
    env = {"ZOOSERVE_AUTH_TOKEN": TOKEN}
    with run_tls_server(penguins_only, tmp_path, pki, "--workers", "2", env=env) as running:
        inputs, species = penguin_inputs()
        for _ in range(2):  # a new channel each time: the kernel picks a worker per connection
            client = grpcclient.InferenceServerClient(running.url, ssl=True,
                                                      root_certificates=str(pki.ca))
            assert species_of(client.infer("penguins", inputs, headers=BEARER)) == species
            error = grpc_failure(lambda client=client: client.infer("penguins", inputs))
            assert error.status() == "StatusCode.UNAUTHENTICATED"
            client.close()
        assert "ZOOSERVE_AUTH_TOKEN" in running.log() and TOKEN not in running.log()



"""Load requests say what they do (issue 21, item 5): zooserve loads a model only from its
folder, so the load parameters Triton defines (`config`, `file:<path>`) and any other are
refused by name, INVALID_ARGUMENT over gRPC and 400 over HTTP, instead of an OK that reloads
the folder as if they had been honoured; a load body that is not a JSON object is 400. Asked
of a real `zooserve serve --model-control explicit` by tritonclient where it can send the
request, by httpx where it cannot (a body that is not JSON, tritonclient.http's `files`).
After each refusal the model still serves and a valid load answers 200.

tritonclient.grpc is imported here, so zooserve's generated protobuf modules are not (both
register `inference.*`): the server runs in its own process."""

from __future__ import annotations

import base64
import json
import shutil

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers.paths import MODELS
from tests.helpers.penguin_rows import LABELS, one_of_each
from tests.helpers.server import run_server

TOKEN = "load-requests-test-token-4b7a"
BEARER = {"authorization": f"Bearer {TOKEN}"}
CONFIG = json.dumps({"max_batch_size": 1})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("load_requests")
    repo = base / "models"
    shutil.copytree(MODELS / "penguins" / "1", repo / "penguins" / "1")
    env = {"ZOOSERVE_AUTH_TOKEN": TOKEN}
    with run_server(repo, base, "--model-control", "explicit", env=env) as running:
        yield running


@pytest.fixture(scope="module")
def grpc_client(server):
    client = grpcclient.InferenceServerClient(server.url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def http_client(server):
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    yield client
    client.close()


def still_serves(client: grpcclient.InferenceServerClient) -> None:
    features, species = one_of_each()
    tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features.astype(np.float32))
    result = client.infer("penguins", [tensor], headers=BEARER, client_timeout=30)
    assert [LABELS[i] for i in result.as_numpy("probabilities").argmax(axis=1)] == species
    assert client.is_model_ready("penguins", headers=BEARER)


# (what is sent, the parameter names the refusal must name)
GRPC_CASES = {
    "config": ({"config": CONFIG}, {}, ["'config'"]),
    "file outside": ({"config": CONFIG}, {"file:../../x": b"\x08\x07"},
                     ["'config'", "'file:../../x'"]),
    "file alone": ({}, {"file:1/model.onnx": b"not a model"}, ["'file:1/model.onnx'"]),
    "unknown": ({}, {"colour": b"green"}, ["'colour'"]),
}


@pytest.mark.parametrize("case", list(GRPC_CASES), ids=list(GRPC_CASES))
def test_grpc_load_parameters_are_refused_by_name(grpc_client, case):
    kwargs, files, named = GRPC_CASES[case]
    with pytest.raises(InferenceServerException) as refused:
        grpc_client.load_model("penguins", headers=BEARER, files=files or None,
                               client_timeout=30, **kwargs)
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT"
    message = refused.value.message()
    assert "not supported" in message
    for name in named:
        assert name in message, message
    still_serves(grpc_client)


def test_grpc_load_without_parameters_loads(grpc_client):
    grpc_client.load_model("penguins", headers=BEARER, client_timeout=30)
    still_serves(grpc_client)


def test_http_load_config_is_refused_by_name(http_client, grpc_client):
    with pytest.raises(InferenceServerException) as refused:
        http_client.load_model("penguins", headers=BEARER, config=CONFIG)
    assert refused.value.status() == "400"
    assert "'config'" in refused.value.message()
    still_serves(grpc_client)


def test_http_load_without_parameters_answers_200(http_client, grpc_client):
    http_client.load_model("penguins", headers=BEARER)  # tritonclient raises on anything else
    still_serves(grpc_client)


# (the body sent, what the 400's error must say)
HTTP_BODIES = {
    "file outside": (json.dumps({"parameters": {
        "file:../../../../outside": base64.b64encode(b"x").decode()}}),
        "'file:../../../../outside'"),
    "unknown parameter": (json.dumps({"parameters": {"colour": "green"}}), "'colour'"),
    "not JSON": ("load it, please", "not JSON"),
    "JSON array": ("[1, 2]", "must be a JSON object"),
    "JSON string": ('"penguins"', "must be a JSON object"),
    "parameters not an object": (json.dumps({"parameters": ["config"]}),
                                 '"parameters" of a load request must be a JSON object'),
    "unknown key": (json.dumps({"config": CONFIG}), "'config'"),
}


@pytest.mark.parametrize("case", list(HTTP_BODIES), ids=list(HTTP_BODIES))
def test_http_load_bodies_that_say_something_else_are_400(server, grpc_client, case):
    sent, said = HTTP_BODIES[case]
    answer = httpx.post(f"{server.http_url}/v2/repository/models/penguins/load", content=sent,
                        headers={**BEARER, "content-type": "application/json"}, timeout=30)
    assert answer.status_code == 400, answer.text
    assert said in answer.json()["error"], answer.json()
    still_serves(grpc_client)


def test_http_empty_and_empty_parameters_load(server, grpc_client):
    url = f"{server.http_url}/v2/repository/models/penguins/load"
    for sent in ("", "{}", '{"parameters": {}}'):
        answer = httpx.post(url, content=sent, headers=BEARER, timeout=30)
        assert answer.status_code == 200, (sent, answer.text)
    still_serves(grpc_client)

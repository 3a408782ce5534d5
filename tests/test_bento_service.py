"""The BentoML service as users run it: one `bentoml serve` process on free loopback ports,
asked over HTTP (BentoML APIs and KServe v2 REST) and over gRPC (tritonclient), one set of
loaded models behind both.

The models are the repository's own penguins, and spectra_similarity when it is committed; until
then the two-input model is a small ONNX graph built here (two FP32 [-1, 8] inputs, their dot
product as `similarity` [-1, 1])."""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.helpers.bento import (
    PENGUINS,
    SERVICE,
    TWO_INPUT,
    RunningBento,
    make_test_repository,
    run_bento,
)
from tests.helpers.paths import MODELS

LABELS = ["Adelie", "Chinstrap", "Gentoo"]
@pytest.fixture(scope="module")
def bento(tmp_path_factory) -> Iterator[RunningBento]:
    tmp = tmp_path_factory.mktemp("bento")
    repository = make_test_repository(tmp / "models")
    env = {"BENTOML_HOME": str(tmp / "bentoml"), "ZOOSERVE_MODELS": str(repository),
           "ZOOSERVE_MODEL_SOURCE": "folder"}
    with run_bento(SERVICE, tmp, env) as running:
        yield running


@pytest.fixture(scope="module")
def http(bento) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bento.http, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def triton(bento):
    client = grpcclient.InferenceServerClient(bento.grpc)
    yield client
    client.close()


def predict(http: httpx.Client, **body) -> httpx.Response:
    return http.post("/predict", json=body)


def spectra(http: httpx.Client, rows: int = 2) -> tuple[np.ndarray, np.ndarray]:
    shape = http.get(f"/v2/models/{TWO_INPUT}").json()["inputs"][0]["shape"]
    rng = np.random.default_rng(7)
    return (rng.random((rows, shape[1]), dtype=np.float32),
            rng.random((rows, shape[1]), dtype=np.float32))


def grpc_error(call) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value


# health, readiness, listing


def test_readyz_livez_and_v2_health(http):
    assert http.get("/readyz").status_code == 200
    assert http.get("/livez").status_code == 200
    assert http.get("/v2/health/live").json() == {"live": True}
    assert http.get("/v2/health/ready").json() == {"ready": True}
    assert http.get("/v2/models/penguins/ready").json() == {"name": "penguins", "ready": True}


def test_models_lists_signatures_and_cards(http):
    response = http.post("/models", json={})
    assert response.status_code == 200
    models = {m["name"]: m for m in response.json()["models"]}
    penguins = models["penguins"]
    assert penguins["state"] == "READY"
    assert penguins["inputs"] == [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]
    assert penguins["outputs"] == [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
    assert penguins["labels"] == LABELS
    assert penguins["card"]["task"] == "classification"
    assert [s["name"] for s in models[TWO_INPUT]["inputs"]] == ["spectrum_a", "spectrum_b"]


def test_openapi_docs_list_the_apis(http):
    paths = http.get("/docs.json").json()["paths"]
    assert "/predict" in paths and "/models" in paths


# predictions


def test_predict_penguins_gives_labels_with_probabilities(http):
    response = predict(http, model="penguins", inputs={"features": PENGUINS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == "penguins" and body["model_version"] == "1"
    (output,) = body["outputs"]
    assert output["name"] == "probabilities" and output["shape"] == [3, 3]
    np.testing.assert_allclose(np.sum(output["data"], axis=1), 1.0, rtol=1e-5)
    assert [p["label"] for p in body["predictions"]] == LABELS
    first = body["predictions"][0]
    assert set(first["probabilities"]) == set(LABELS)
    assert first["probability"] == max(first["probabilities"].values())


def test_predict_accepts_a_bare_list_and_v2_tensors(http):
    bare = predict(http, model="penguins", inputs=PENGUINS[:1]).json()
    tensors = [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": PENGUINS[0]}]
    v2 = predict(http, model="penguins", inputs=tensors).json()
    assert bare["outputs"] == v2["outputs"]


def test_predict_two_input_model_matches_grpc(http, triton):
    a, b = spectra(http)
    response = predict(http, model=TWO_INPUT,
                       inputs={"spectrum_a": a.tolist(), "spectrum_b": b.tolist()})
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert output["name"] == "similarity" and output["shape"] == [2, 1]
    assert "predictions" not in response.json()  # no labels, no label list

    tensors = []
    for name, array in (("spectrum_a", a), ("spectrum_b", b)):
        tensor = grpcclient.InferInput(name, list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    over_grpc = triton.infer(TWO_INPUT, tensors).as_numpy("similarity")
    np.testing.assert_array_equal(np.asarray(output["data"], dtype=np.float32), over_grpc)


def test_v2_rest_metadata_and_infer(http):
    metadata = http.get("/v2/models/penguins").json()
    assert metadata["versions"] == ["1"] and metadata["platform"] == "onnxruntime_onnx"
    body = {"id": "r1", "inputs": [{"name": "features", "datatype": "FP32", "shape": [3, 4],
                                    "data": sum(PENGUINS, [])}]}
    response = http.post("/v2/models/penguins/versions/1/infer", json=body)
    assert response.status_code == 200, response.text
    (output,) = response.json()["outputs"]
    assert response.json()["id"] == "r1"
    assert output["shape"] == [3, 3] and len(output["data"]) == 9
    assert http.get("/v2").json()["name"] == "zooserve"


# client mistakes: 4xx with the gRPC frontend's message, and the server keeps serving


def test_malformed_body_is_400_and_the_server_keeps_serving(http):
    headers = {"Content-Type": "application/json"}
    broken = http.post("/predict", content=b'{"model": "penguins", "inputs": ', headers=headers)
    assert broken.status_code == 400
    assert "json" in broken.text.lower()
    broken_v2 = http.post("/v2/models/penguins/infer", content=b"{nope", headers=headers)
    assert broken_v2.status_code == 400
    assert "not JSON" in broken_v2.json()["error"]
    assert predict(http, model="penguins", inputs=PENGUINS).status_code == 200


def test_unknown_model_is_404_with_the_grpc_message(http, triton):
    response = predict(http, model="no_such_model", inputs=PENGUINS)
    assert response.status_code == 404
    message = response.json()["error"]
    assert "no_such_model" in message and "penguins" in message
    assert http.get("/v2/models/no_such_model").json()["error"] == message
    assert http.post("/v2/models/no_such_model/infer", json={"inputs": []}).status_code == 404

    tensor = grpcclient.InferInput("features", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.asarray(PENGUINS[:1], dtype=np.float32))
    error = grpc_error(lambda: triton.infer("no_such_model", [tensor]))
    assert error.status() == "StatusCode.NOT_FOUND"
    assert message in error.message()
    assert predict(http, model="penguins", inputs=PENGUINS).status_code == 200


def test_wrong_shape_is_400_with_the_grpc_message(http, triton):
    rows = [[1.0, 2.0, 3.0]]
    response = predict(http, model="penguins", inputs={"features": rows})
    assert response.status_code == 400
    message = response.json()["error"]
    assert "features" in message and "axis 1 must be 4" in message

    tensor = grpcclient.InferInput("features", [1, 3], "FP32")
    tensor.set_data_from_numpy(np.asarray(rows, dtype=np.float32))
    error = grpc_error(lambda: triton.infer("penguins", [tensor]))
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert message in error.message()


@pytest.mark.parametrize(
    "inputs, fragment",
    [
        ({"features": [[1, 2], [3]]}, "cannot be read as FP32"),
        ({"features": [["a", "b", "c", "d"]]}, "cannot be read as FP32"),
        ({"petals": PENGUINS}, "has no input 'petals'"),
        ("not a tensor", "validation error"),
    ],
)
def test_bad_inputs_are_400(http, inputs, fragment):
    response = predict(http, model="penguins", inputs=inputs)
    assert response.status_code == 400, response.text
    assert fragment in response.text


@pytest.mark.parametrize(
    "inputs",
    [
        '{"features": [[NaN, 18.7, 181, 3750]]}',
        '{"features": [[39.1, 1e400, 181, 3750]]}',
        '{"features": [[39.1, 18.7, -Infinity, 3750]]}',
        "[[NaN, 18.7, 181, 3750]]",
        '[{"name": "features", "datatype": "FP32", "shape": [1, 4], '
        '"data": [39.1, 18.7, 181, Infinity]}]',
    ],
)
def test_predict_refuses_numbers_json_cannot_carry(http, inputs):
    """They used to run, and the answer was 200 with `null`s."""
    body = '{"model": "penguins", "inputs": ' + inputs + "}"
    response = http.post("/predict", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    assert "'features'" in message and "not finite" in message
    assert predict(http, model="penguins", inputs=PENGUINS).status_code == 200


def test_two_inputs_need_names(http):
    a, b = spectra(http, rows=1)
    response = predict(http, model=TWO_INPUT, inputs=a.tolist())
    assert response.status_code == 400
    assert "spectrum_a" in response.json()["error"]


# gRPC in the same process, and counters shared by both frontends


def test_grpc_frontend_answers_from_the_same_process(triton):
    assert triton.is_server_ready()
    tensor = grpcclient.InferInput("features", [3, 4], "FP32")
    tensor.set_data_from_numpy(np.asarray(PENGUINS, dtype=np.float32))
    probabilities = triton.infer("penguins", [tensor]).as_numpy("probabilities")
    assert [LABELS[i] for i in probabilities.argmax(axis=1)] == LABELS


def _penguin_successes(metrics: str) -> float:
    found = re.search(
        r'^nv_inference_request_success\{model="penguins",version="1"\} (\S+)$',
        metrics, re.MULTILINE,
    )
    assert found, metrics[-2000:]
    return float(found.group(1))


def test_metrics_count_http_and_grpc_requests_together(http, triton):
    before = http.get("/metrics")
    assert before.status_code == 200
    assert "bentoml_service_request_total" in before.text
    tensor = grpcclient.InferInput("features", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.asarray(PENGUINS[:1], dtype=np.float32))
    triton.infer("penguins", [tensor])
    assert predict(http, model="penguins", inputs=PENGUINS[:1]).status_code == 200
    after = http.get("/metrics").text
    assert _penguin_successes(after) == _penguin_successes(before.text) + 2

    stats = triton.get_inference_statistics("penguins", as_json=True)["model_stats"][0]
    assert int(stats["inference_stats"]["success"]["count"]) == _penguin_successes(after)


def test_a_model_that_fails_to_load_is_named_and_the_others_serve(tmp_path):
    """The others still serve and the server is ready; the failed model is UNAVAILABLE in the
    index and answers 404. ZOOSERVE_REQUIRE_ALL_MODELS=true turns readiness off instead."""
    repository = tmp_path / "models"
    shutil.copytree(MODELS / "penguins", repository / "penguins")
    (repository / "broken" / "1").mkdir(parents=True)
    (repository / "broken" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    env = {"BENTOML_HOME": str(tmp_path / "bentoml"), "ZOOSERVE_MODELS": str(repository),
           "ZOOSERVE_MODEL_SOURCE": "folder"}
    with run_bento(SERVICE, tmp_path, env, wait_for="/livez") as running, httpx.Client(
        base_url=running.http, timeout=10
    ) as http:
        assert http.get("/readyz").status_code == 200
        assert http.get("/v2/health/ready").json() == {"ready": True}
        assert predict(http, model="penguins", inputs=PENGUINS).status_code == 200
        states = {m["name"]: m["state"] for m in http.post("/models", json={}).json()["models"]}
        assert states == {"penguins": "READY", "broken": "UNAVAILABLE"}
        assert predict(http, model="broken", inputs=PENGUINS).status_code == 404

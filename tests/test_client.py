"""`zooserve.Client` and `zooserve.AsyncClient` against a real `zooserve serve` on the shipped
models: predictions from arrays, lists, DataFrames and dicts, in labels; metadata, the
repository index, readiness; every failure one ClientError; TLS with a token; one RPC per
prediction once a model is known, and a fresh look after a failure; tritonclient.grpc and
zooserve in one process; and a client-only install (no pandas, nothing of the server)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

import zooserve
from tests.helpers.counting_stub import CountingStub
from tests.helpers.paths import MODELS, ROOT
from tests.helpers.penguin_rows import FEATURES, LABELS
from tests.helpers.pki import make_pki, run_tls_server
from tests.helpers.server import free_port, run_server
from zooserve import ClientError

# One penguin of each species (palmerpenguins rows 0, 152 and 220), in the card's order.
ROWS = [[39.1, 18.7, 181.0, 3750.0], [46.5, 17.9, 192.0, 3500.0], [46.1, 13.2, 211.0, 4500.0]]
SPECIES = ["Adelie", "Chinstrap", "Gentoo"]


@pytest.fixture(scope="module")
def client(server):
    with zooserve.Client(server.url) as client:
        yield client


def raised(call) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value


# predictions


def test_an_array_gives_the_species(client):
    result = client.predict("penguins", np.array(ROWS))  # float64: cast to the model's FP32
    assert (result.model, result.version) == ("penguins", "1")
    assert result.labels == LABELS
    assert result.predicted() == SPECIES
    probabilities = result.outputs["probabilities"]
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, 3)
    assert result.predicted() == [LABELS[i] for i in probabilities.argmax(axis=1)]


def test_a_nested_list_gives_the_same_answer(client):
    from_list = client.predict("penguins", ROWS)
    from_array = client.predict("penguins", np.array(ROWS, dtype=np.float32))
    np.testing.assert_array_equal(from_list.outputs["probabilities"],
                                  from_array.outputs["probabilities"])


def test_to_frame_has_the_labels_as_columns(client):
    result = client.predict("penguins", ROWS)
    frame = result.to_frame()
    assert list(frame.columns) == LABELS
    np.testing.assert_array_equal(frame.to_numpy(), result.outputs["probabilities"])
    # the lesson's idxmax(axis="columns") is predicted()
    assert frame.idxmax(axis="columns").tolist() == result.predicted() == SPECIES


def test_a_data_frame_is_matched_by_column_name(client):
    frame = pd.DataFrame(ROWS, columns=FEATURES, index=["a", "b", "c"])
    shuffled = frame[[FEATURES[2], FEATURES[0], FEATURES[3], FEATURES[1]]]
    result = client.predict("penguins", shuffled)
    assert result.predicted() == SPECIES
    np.testing.assert_array_equal(result.outputs["probabilities"],
                                  client.predict("penguins", ROWS).outputs["probabilities"])
    assert list(result.to_frame().index) == ["a", "b", "c"]  # rows keep the frame's index


def test_a_data_frame_missing_a_column_is_refused_naming_it(client):
    frame = pd.DataFrame(ROWS, columns=FEATURES).drop(columns="body_mass_g")
    error = raised(lambda: client.predict("penguins", frame))
    assert error.code is None
    assert "missing columns body_mass_g" in str(error)
    extra = pd.DataFrame(ROWS, columns=FEATURES).assign(island="Torgersen")
    error = raised(lambda: client.predict("penguins", extra))
    assert "island" in str(error) and "body_mass_g" in str(error)  # and says what it takes


def test_values_that_cannot_be_the_datatype_are_refused(client):
    error = raised(lambda: client.predict("penguins", [["long", 18.7, 181, 3750]]))
    assert error.code is None
    assert str(error).startswith("input 'features': elements cannot be read as FP32")
    text = pd.DataFrame([["long", 18.7, 181, 3750]], columns=FEATURES)
    assert "FP32" in str(raised(lambda: client.predict("penguins", text)))


def test_a_model_with_two_inputs_takes_a_dict(client):
    rng = np.random.default_rng(0)
    a, b = rng.random((2, 200)), rng.random((2, 200))
    result = client.predict("spectra_similarity", {"spectrum_b": b, "spectrum_a": a})
    assert result.outputs["similarity"].shape == (2, 1)
    same = client.predict("spectra_similarity", {"spectrum_a": a, "spectrum_b": a})
    np.testing.assert_allclose(same.outputs["similarity"], 1.0, atol=1e-3)
    assert result.labels is None
    assert list(result.to_frame().columns) == ["similarity"]  # unlabelled: the output's column
    error = raised(lambda: result.predicted())
    assert "no labels" in str(error)
    several = raised(lambda: client.predict("spectra_similarity", a))
    assert "spectrum_a, spectrum_b" in str(several) and "dict" in str(several)
    missing = raised(lambda: client.predict("spectra_similarity", {"spectrum_a": a}))
    assert "missing spectrum_b" in str(missing)


def test_an_unlabelled_output_with_several_columns(client):
    result = client.predict("spectra_embedding", np.zeros((1, 200)))
    columns = list(result.to_frame().columns)
    assert columns[:2] == ["embedding_0", "embedding_1"] and len(columns) == 200


def test_describe_is_what_zooserve_predict_prints(client):
    text = str(client.predict("penguins", ROWS[:2]))
    lines = text.splitlines()
    assert lines[0] == "model penguins version 1"
    assert lines[1].startswith("Adelie  (probabilities: Adelie=0.9")
    assert lines[2].startswith("Chinstrap  (probabilities: ")


# metadata, index, readiness


def test_metadata_reads_the_card(client):
    info = client.metadata("penguins")
    assert info.name == "penguins" and info.versions == ["1"]
    assert [(t.name, t.datatype, t.shape) for t in info.inputs] == [("features", "FP32", (-1, 4))]
    assert [t.name for t in info.outputs] == ["probabilities"]
    assert info.labels == LABELS and info.feature_names == FEATURES
    assert info.task == "classification" and info.description
    weather = client.metadata("weather")
    card = json.loads((MODELS / "weather" / "1" / "card.json").read_text())
    assert weather.feature_names == card["feature_names"] and weather.labels is None


def test_models_lists_the_repository(client):
    rows = {(m.name, m.version, m.state) for m in client.models()}
    assert ("penguins", "1", "READY") in rows and ("spectra_similarity", "1", "READY") in rows


def test_ready(client):
    assert client.ready() is True
    assert client.ready("penguins") is True
    assert client.ready("no_such_model") is False


# errors


def test_an_unknown_model_is_not_found_in_the_servers_words(client):
    error = raised(lambda: client.predict("no_such_model", ROWS))
    assert error.code == "NOT_FOUND"
    assert str(error).startswith("model 'no_such_model' not found")


def test_a_wrong_shape_is_invalid_argument_naming_the_input(client):
    error = raised(lambda: client.predict("penguins", [[1.0, 2.0, 3.0]]))
    assert error.code == "INVALID_ARGUMENT"
    assert str(error) == ("input 'features': shape [1, 3] does not match [-1, 4]: axis 1 must "
                          "be 4, got 3")


def test_a_timeout_is_deadline_exceeded(client):
    error = raised(lambda: client.predict("penguins", ROWS, timeout=1e-6))
    assert error.code == "DEADLINE_EXCEEDED"
    assert "within the timeout of 1e-06 s" in str(error)
    # a large request on a model already known: the deadline passes in the RPC itself
    images = np.zeros((64, 28, 28, 1), dtype=np.float32)
    client.metadata("digits")
    error = raised(lambda: client.predict("digits", images, timeout=1e-3))
    assert error.code == "DEADLINE_EXCEEDED"
    assert client.predict("digits", images).outputs["probabilities"].shape == (64, 10)


def test_a_server_that_is_not_there_is_unavailable():
    with zooserve.Client(f"127.0.0.1:{free_port()}", timeout=5) as nowhere:
        error = raised(lambda: nowhere.predict("penguins", ROWS))
    assert error.code == "UNAVAILABLE"
    assert "is unavailable" in str(error) and "127.0.0.1" in str(error)


# what the client keeps about a model


def test_a_known_model_costs_one_rpc_per_prediction(server):
    with zooserve.Client(server.url) as client:
        client._stub = counting = CountingStub(client._stub)
        client.predict("penguins", ROWS)
        assert counting.calls == ["ModelMetadata", "ModelConfig", "ModelInfer"]
        counting.calls.clear()
        client.predict("penguins", ROWS)
        client.predict("penguins", pd.DataFrame(ROWS, columns=FEATURES))
        assert counting.calls == ["ModelInfer", "ModelInfer"]
        counting.calls.clear()
        raised(lambda: client.predict("penguins", [[1.0, 2.0]]))  # INVALID_ARGUMENT
        client.predict("penguins", ROWS)
        assert counting.calls == ["ModelInfer", "ModelMetadata", "ModelConfig", "ModelInfer"]


def test_a_model_reloaded_with_another_signature_is_asked_for_again(copy_model, tmp_path):
    repo = copy_model("penguins")
    with run_server(repo, tmp_path, "--model-control", "poll", "--poll-interval", "0.2") as running:
        with zooserve.Client(running.url) as client:
            assert client.predict("penguins", ROWS).predicted() == SPECIES
            # version 2 of "penguins" is the weather model: 15 features, no labels
            staging = repo / "penguins" / ".staging-2"
            shutil.copytree(MODELS / "weather" / "1", staging)
            staging.rename(repo / "penguins" / "2")
            deadline = time.monotonic() + 30
            while not client.ready("penguins", "2"):
                assert time.monotonic() < deadline, running.log()
                time.sleep(0.1)
            error = raised(lambda: client.predict("penguins", ROWS))  # what it knew is stale
            assert error.code == "INVALID_ARGUMENT"
            result = client.predict("penguins", np.zeros((1, 15)))
            assert result.version == "2" and result.labels is None
            assert result.outputs["prediction"].shape == (1, 1)


# the async client


def test_the_async_client_does_the_same(server):
    async def main():
        async with zooserve.AsyncClient(server.url) as client:
            result = await client.predict("penguins", np.array(ROWS))
            frame = await client.predict("penguins", pd.DataFrame(ROWS, columns=FEATURES))
            info = await client.metadata("penguins")
            models = await client.models()
            ready = await client.ready(), await client.ready("penguins")
            missing = None
            try:
                await client.predict("no_such_model", ROWS)
            except ClientError as error:
                missing = error
            late = None
            try:
                await client.predict("penguins", ROWS, timeout=1e-6)
            except ClientError as error:
                late = error
            return result, frame, info, models, ready, missing, late

    result, frame, info, models, ready, missing, late = asyncio.run(main())
    assert result.predicted() == frame.predicted() == SPECIES
    assert info.labels == LABELS and info.feature_names == FEATURES
    assert ("penguins", "READY") in {(m.name, m.state) for m in models}
    assert ready == (True, True)
    assert missing.code == "NOT_FOUND" and "no_such_model" in str(missing)
    assert late.code == "DEADLINE_EXCEEDED"


# TLS and a token


TLS_TOKEN = "zooserve-client-test-token-7d2e"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def secure(pki, tmp_path_factory):
    """Mutual TLS and a bearer token, on penguins only."""
    tmp = tmp_path_factory.mktemp("secure-client")
    repo = tmp / "models"
    shutil.copytree(MODELS / "penguins", repo / "penguins")
    (tmp / "token").write_text(TLS_TOKEN + "\n")
    with run_tls_server(repo, tmp, pki, "--auth-token-file", str(tmp / "token"),
                        "--tls-client-ca", str(pki.client_ca), mutual=True) as running:
        yield running


def test_tls_with_the_token_works_and_without_it_is_unauthenticated(secure, pki):
    settings = dict(root_certificates=str(pki.ca), client_certificate=pki.client_cert,
                    client_key=pki.client_key.read_bytes())  # a path or PEM bytes
    with zooserve.Client(secure.url, token=TLS_TOKEN, **settings) as client:
        assert client.predict("penguins", ROWS).predicted() == SPECIES
    with zooserve.Client(secure.url, **settings) as client:
        error = raised(lambda: client.predict("penguins", ROWS))
    assert error.code == "UNAUTHENTICATED"
    assert "missing bearer token" in str(error)
    with zooserve.Client(secure.url, token="not-the-token-at-all-000", **settings) as client:
        assert raised(lambda: client.models()).code == "UNAUTHENTICATED"
    # no client certificate: the handshake fails
    with zooserve.Client(secure.url, token=TLS_TOKEN, root_certificates=pki.ca,
                         timeout=5) as client:
        assert raised(lambda: client.ready()).code == "UNAVAILABLE"


def test_zooserve_predict_speaks_tls_with_a_token(secure, pki, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TLS_TOKEN + "\n")
    command = [sys.executable, "-m", "zooserve", "predict", "penguins", "--url", secure.url,
               "--inputs", json.dumps(ROWS[:1]), "--tls-ca", str(pki.ca),
               "--tls-client-cert", str(pki.client_cert), "--tls-client-key",
               str(pki.client_key)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZOOSERVE_AUTH_TOKEN")}

    def predict(*flags: str, extra_env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([*command, *flags], capture_output=True, text=True, cwd=ROOT,
                              env={**env, **(extra_env or {})}, timeout=60)

    with_file = predict("--token-file", str(token_file))
    assert with_file.returncode == 0, with_file.stderr
    assert with_file.stdout.splitlines()[1].startswith("Adelie ")
    from_env = predict(extra_env={"ZOOSERVE_AUTH_TOKEN": TLS_TOKEN})
    assert from_env.returncode == 0, from_env.stderr
    without = predict()
    assert without.returncode != 0
    assert without.stderr.startswith("zooserve predict: error: UNAUTHENTICATED: missing bearer")


def test_a_client_mistake_in_the_settings_is_a_client_error(tmp_path):
    error = raised(lambda: zooserve.Client("localhost:1", root_certificates=tmp_path / "no.crt"))
    assert error.code is None and "no.crt" in str(error)
    error = raised(lambda: zooserve.Client("localhost:1", client_certificate=b"x"))
    assert "client_key" in str(error)
    assert "one word" in str(raised(lambda: zooserve.Client("localhost:1", token="a b")))


# tritonclient and zooserve in one process


BOTH = """
import sys
import numpy as np
{first}
{second}
from google.protobuf import json_format  # our messages still parse from JSON
from zooserve.protocol.generated import grpc_service_pb2 as pb
json_format.ParseDict({{"model_name": "penguins"}}, pb.ModelInferRequest())
url = sys.argv[1]
triton = tritonclient.grpc.InferenceServerClient(url)
tensor = tritonclient.grpc.InferInput("features", [1, 4], "FP32")
tensor.set_data_from_numpy(np.array([[39.1, 18.7, 181, 3750]], dtype=np.float32))
theirs = triton.infer("penguins", [tensor]).as_numpy("probabilities")
with zooserve.Client(url) as client:
    ours = client.predict("penguins", [[39.1, 18.7, 181, 3750]])
assert np.array_equal(theirs, ours.outputs["probabilities"]), (theirs, ours.outputs)
print(ours.predicted()[0])
"""


@pytest.mark.parametrize("first, second", [
    ("import tritonclient.grpc", "import zooserve.client; import zooserve"),
    ("import zooserve.client; import zooserve", "import tritonclient.grpc"),
])  # fmt: skip
def test_tritonclient_and_zooserve_share_a_process(server, first, second):
    script = textwrap.dedent(BOTH.format(first=first, second=second))
    result = subprocess.run([sys.executable, "-c", script, server.url], capture_output=True,
                            text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Adelie"


def test_tritonclient_and_zooserve_in_this_process(server, triton, client):
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput("features", [3, 4], "FP32")
    tensor.set_data_from_numpy(np.array(ROWS, dtype=np.float32))
    theirs = triton.infer("penguins", [tensor]).as_numpy("probabilities")
    np.testing.assert_array_equal(theirs, client.predict("penguins", ROWS).outputs["probabilities"])


# a client-only install


CLIENT_ONLY = """
import sys
# what a client-only install lacks: pandas, and everything of the server
for name in ("pandas", "onnxruntime", "grpc_health", "grpc_reflection", "prometheus_client",
             "starlette", "uvicorn", "tritonclient", "tensorflow"):
    sys.modules[name] = None
import zooserve
with zooserve.Client(sys.argv[1]) as client:
    result = client.predict("penguins", [[39.1, 18.7, 181, 3750]])
print(result.predicted()[0])
try:
    result.to_frame()
except zooserve.ClientError as error:
    print(error.code, error)
"""


def test_without_pandas_to_frame_says_to_install_it(server):
    result = subprocess.run([sys.executable, "-c", CLIENT_ONLY, server.url],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "Adelie", "None to_frame() needs pandas: pip install pandas"
    ]


def test_import_zooserve_stays_light():
    script = ("import sys, zooserve; heavy = {'grpc', 'numpy', 'pandas', 'onnxruntime'}; "
              "print(sorted(heavy & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr


# the benchmark


def test_the_overhead_benchmark_prints_its_tables():
    """benchmarks/client_overhead.py, briefly: figures only, nothing about how fast."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.client_overhead", "--calls", "20", "--warmup", "5",
         "--rounds", "1"], capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("| (")]
    assert [row.split("|")[1].strip()[:3] for row in rows][:4] == ["(a)", "(b)", "(c)", "(d)"]
    assert "| .predicted() |" in result.stdout

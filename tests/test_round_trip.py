"""Train → export → serve → predict, end to end in real processes: a few epochs of the
penguins model into a scratch repository, served and queried with tritonclient."""

from __future__ import annotations

import csv
import hashlib
import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.helpers.cli import zooserve
from tests.helpers.penguin_rows import LABELS, one_of_each
from tests.helpers.server import run_server


@pytest.mark.slow  # trains with TensorFlow
def test_train_export_serve_predict(tmp_path):
    repo, ledger = tmp_path / "models", tmp_path / "ledger.csv"
    trained = zooserve("train", "penguins", "--models", str(repo), "--epochs", "3",
                       "--ledger", str(ledger), timeout=600)
    assert trained.returncode == 0, trained.stdout[-3000:] + trained.stderr[-3000:]

    version_dir = repo / "penguins" / "1"
    card = json.loads((version_dir / "card.json").read_text())
    model_bytes = (version_dir / "model.onnx").read_bytes()
    assert card["onnx"]["sha256"] == hashlib.sha256(model_bytes).hexdigest()
    assert card["labels"] == LABELS
    assert card["onnx"]["parity_max_abs_diff"] <= 1e-5
    with open(ledger, newline="") as rows:
        assert [row["model"] for row in csv.DictReader(rows)] == ["penguins"]

    with run_server(repo, tmp_path) as running:
        client = grpcclient.InferenceServerClient(running.url)
        features, _ = one_of_each()
        tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
        tensor.set_data_from_numpy(features)
        probabilities = client.infer("penguins", [tensor]).as_numpy("probabilities")
        assert probabilities.shape == (3, 3)
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
        labels = client.get_model_config("penguins").config.parameters["labels"].string_value
        assert json.loads(labels) == LABELS

    # Training again adds a version; the server then serves the highest by default.
    again = zooserve("train", "penguins", "--models", str(repo), "--epochs", "1",
                     "--ledger", str(ledger), timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (repo / "penguins" / "2" / "model.onnx").is_file()
    with run_server(repo, tmp_path) as running:
        client = grpcclient.InferenceServerClient(running.url)
        assert client.get_model_metadata("penguins").versions == ["1", "2"]
        result = client.infer("penguins", [tensor])
        assert result.get_response().model_version == "2"

"""The models committed under models/: cards follow the contract, and each shipped ONNX file,
run with ONNX Runtime on its loader's test split, scores exactly what its card claims.

No TensorFlow: this is what a serving install could check about the zoo it ships.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

onnxruntime = pytest.importorskip("onnxruntime")
pytest.importorskip("pandas", reason="the loaders need the `train` extra")

from tests.helpers.paths import ROOT  # noqa: E402
from zooserve.training.data import images, penguins, spectra, weather  # noqa: E402
from zooserve.training.fitting import score  # noqa: E402
from zooserve.training.recipes.digits_transfer import TASK_CLASSES, TASK_PER_CLASS  # noqa: E402

MODELS = ROOT / "models"
LEDGER = ROOT / "results" / "ledger.csv"
NAMES = [
    "penguins", "weather", "digits", "digits_transfer", "spectra_similarity", "spectra_embedding",
]  # fmt: skip
CARD_KEYS = {
    "name", "version", "task", "description", "inputs", "outputs", "metrics", "primary_metric",
    "dataset", "training", "libraries", "git_commit", "created", "onnx",
}  # fmt: skip
MAX_ONNX_BYTES = 2_500_000  # committed to git: keep them small


def _latest(name: str) -> Path:
    versions = [p for p in (MODELS / name).iterdir() if p.name.isdigit()]
    return max(versions, key=lambda p: int(p.name))


def _card(name: str) -> dict:
    return json.loads((_latest(name) / "card.json").read_text())


def _run(name: str, *arrays: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(
        str(_latest(name) / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    names = [i.name for i in session.get_inputs()]
    feeds = {n: a.astype(np.float32) for n, a in zip(names, arrays, strict=True)}
    return session.run(None, feeds)[0]


@pytest.mark.parametrize("name", NAMES)
def test_card_and_file(name):
    folder = _latest(name)
    card = _card(name)
    assert CARD_KEYS <= set(card)
    assert card["name"] == name and card["version"] == int(folder.name)
    data = (folder / "model.onnx").read_bytes()
    assert len(data) < MAX_ONNX_BYTES
    assert hashlib.sha256(data).hexdigest() == card["onnx"]["sha256"]
    assert card["onnx"]["parity_max_abs_diff"] <= 1e-5 and card["onnx"]["opset"] == 17
    assert not card["git_commit"].endswith("-dirty"), "ship models trained from committed code"
    for png in card["plots"]:
        assert (folder / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ledger_has_every_shipped_model():
    with open(LEDGER, newline="") as stream:
        rows = {(r["model"], int(r["version"]), r["created"]) for r in csv.DictReader(stream)}
    for name in NAMES:
        card = _card(name)
        assert (name, card["version"], card["created"]) in rows


def test_penguins_reach_095_and_name_species():
    card = _card("penguins")
    dataset = penguins.load_penguins()
    probabilities = _run("penguins", dataset.x_test)
    assert score("classification", dataset.y_test, probabilities) == card["metrics"]
    assert card["metrics"]["accuracy"] >= 0.95
    rows = np.array([[39.1, 18.7, 181, 3750], [46.5, 17.9, 192, 3500], [50.0, 15.2, 218, 5700]])
    species = [card["labels"][i] for i in _run("penguins", rows).argmax(axis=1)]
    assert species == ["Adelie", "Chinstrap", "Gentoo"]


def test_weather_beats_persistence():
    card = _card("weather")
    dataset = weather.load_seattle_weather()
    assert card["feature_names"] == dataset.feature_names
    metrics = score("regression", dataset.y_test, _run("weather", dataset.x_test))
    assert metrics == pytest.approx(card["metrics"], abs=1e-4)
    persistence = card["baselines"]["persistence"]
    assert persistence == score("regression", dataset.y_test, dataset.extras["test_persistence"])
    assert card["metrics"]["rmse"] < persistence["rmse"] and card["beats_baselines"]


def test_digits_reach_095():
    card = _card("digits")
    dataset = images.load_mnist_5k()
    metrics = score("classification", dataset.y_test, _run("digits", dataset.x_test))
    assert metrics == pytest.approx(card["metrics"], abs=1e-4)
    assert card["metrics"]["accuracy"] >= 0.95


def test_transfer_beats_scratch():
    card = _card("digits_transfer")
    task = images.only_classes(images.load_mnist_5k(), TASK_CLASSES, "5-9")
    task = images.few_per_class(task, TASK_PER_CLASS)
    assert card["labels"] == task.labels == ["5", "6", "7", "8", "9"]
    metrics = score("classification", task.y_test, _run("digits_transfer", task.x_test))
    assert metrics == pytest.approx(card["metrics"], abs=1e-4)
    assert card["metrics"]["accuracy"] > card["baselines"]["scratch"]["accuracy"]
    assert card["beats_baselines"]


def test_spectra_pair():
    similarity, embedding = _card("spectra_similarity"), _card("spectra_embedding")
    dataset = spectra.load_synthetic_spectra()
    a, b = dataset.x_test
    predicted = _run("spectra_similarity", a, b)
    assert score("similarity", dataset.y_test, predicted) == pytest.approx(
        similarity["metrics"], abs=1e-4
    )
    assert similarity["metrics"]["rmse"] < similarity["baselines"]["raw_cosine"]["rmse"]
    # Identical spectra are as similar as it gets.
    same = _run("spectra_similarity", a[:20], a[:20])
    assert np.allclose(same, 1.0, atol=1e-4)
    # The embedder gives the same scores by cosine, from rows of width 200.
    ea, eb = _run("spectra_embedding", a), _run("spectra_embedding", b)
    assert ea.shape[1] == 200 and np.all(np.linalg.norm(ea, axis=1) > 0)
    cosine = np.sum(ea * eb, axis=1) / (np.linalg.norm(ea, axis=1) * np.linalg.norm(eb, axis=1))
    assert np.allclose(cosine, predicted.reshape(-1), atol=1e-4)
    assert embedding["metrics"] == similarity["metrics"]

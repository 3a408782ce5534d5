"""Every shipped model of the zoo, served by a real `zooserve serve` and asked by tritonclient
for predictions on its own held-out test split (rebuilt by the training package's loaders):
the served predictions must reproduce the metric on the model's card."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.helpers.paths import MODELS
from zooserve.training.recipes import lookup
from zooserve.training.spec import TrainOptions

ZOO = ["penguins", "weather", "digits", "digits_transfer", "spectra_similarity",
       "spectra_embedding"]
# Spectral libraries served as search models (tests/test_search_served.py asks them).
LIBRARIES = ["spectra_search"]


def card(name: str) -> dict:
    return json.loads((MODELS / name / "1" / "card.json").read_text())


def test_the_whole_zoo_is_shipped():
    assert sorted(p.name for p in MODELS.iterdir() if p.is_dir()) == sorted(ZOO + LIBRARIES)


@pytest.fixture(scope="module")
def test_split():
    cache: dict[str, object] = {}

    def load(name: str):
        if name not in cache:
            cache[name] = lookup(name).load(TrainOptions())
        return cache[name]

    return load


def infer(triton, model: str, inputs: dict[str, np.ndarray], batch: int = 500) -> np.ndarray:
    """The model's first output for all rows, sent in batches below the server's maximum."""
    rows = len(next(iter(inputs.values())))
    parts = []
    for start in range(0, rows, batch):
        tensors = []
        for name, array in inputs.items():
            chunk = array[start : start + batch].astype(np.float32)
            tensor = grpcclient.InferInput(name, list(chunk.shape), "FP32")
            tensor.set_data_from_numpy(chunk)
            tensors.append(tensor)
        result = triton.infer(model, tensors)
        parts.append(result.as_numpy(result.get_response().outputs[0].name))
    return np.concatenate(parts)


@pytest.mark.parametrize("name", ZOO)
def test_served_signature_is_the_cards(triton, name):
    assert triton.is_model_ready(name)
    metadata = triton.get_model_metadata(name)
    described = card(name)
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in described["inputs"]
    ]
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == [
        (t["name"], t["datatype"], t["shape"]) for t in described["outputs"]
    ]


@pytest.mark.parametrize("name", ["penguins", "digits", "digits_transfer"])
def test_classifiers_reproduce_their_card_accuracy(triton, test_split, name):
    data = test_split(name)
    (input_name,) = [t["name"] for t in card(name)["inputs"]]
    probabilities = infer(triton, name, {input_name: data.x_test})
    accuracy = np.mean(probabilities.argmax(axis=1) == data.y_test.argmax(axis=1))
    assert accuracy == pytest.approx(card(name)["metrics"]["accuracy"], abs=0.002)
    labels = json.loads(triton.get_model_config(name).config.parameters["labels"].string_value)
    assert labels == card(name)["labels"] == data.labels


def test_digit_images_get_their_digit(triton, test_split):
    data = test_split("digits")
    first_of_each = [int(np.flatnonzero(data.y_test.argmax(axis=1) == d)[0]) for d in range(10)]
    probabilities = infer(triton, "digits", {"image": data.x_test[first_of_each]})
    correct = probabilities.argmax(axis=1) == np.arange(10)
    assert correct.sum() >= 9  # one sample per digit; the card's accuracy is 0.97


def test_weather_reproduces_its_rmse_and_beats_persistence(triton, test_split):
    data = test_split("weather")
    predicted = infer(triton, "weather", {"features": data.x_test}).reshape(-1)
    rmse = float(np.sqrt(np.mean((predicted - data.y_test.reshape(-1)) ** 2)))
    described = card("weather")
    assert rmse == pytest.approx(described["metrics"]["rmse"], abs=1e-3)
    assert rmse < described["baselines"]["persistence"]["rmse"]
    # a temperature in degrees C that Seattle has seen
    assert -15 < predicted.min() and predicted.max() < 45


def test_spectra_similarity_reproduces_its_rmse(triton, test_split):
    data = test_split("spectra_similarity")
    a, b = data.x_test
    scores = infer(triton, "spectra_similarity", {"spectrum_a": a, "spectrum_b": b}).reshape(-1)
    rmse = float(np.sqrt(np.mean((scores - data.y_test.reshape(-1)) ** 2)))
    assert rmse == pytest.approx(card("spectra_similarity")["metrics"]["rmse"], abs=1e-3)
    assert np.all(scores >= -1 - 1e-5) and np.all(scores <= 1 + 1e-5)  # a cosine


def test_identical_spectra_are_similar(triton, test_split):
    a, _ = test_split("spectra_similarity").x_test
    scores = infer(triton, "spectra_similarity", {"spectrum_a": a[:16], "spectrum_b": a[:16]})
    np.testing.assert_allclose(scores.reshape(-1), 1.0, atol=1e-4)


def test_embeddings_are_200_wide_and_their_cosine_is_the_similarity(triton, test_split):
    a, b = test_split("spectra_similarity").x_test
    a, b = a[:32], b[:32]
    embed_a = infer(triton, "spectra_embedding", {"spectrum": a})
    embed_b = infer(triton, "spectra_embedding", {"spectrum": b})
    assert embed_a.shape == (32, 200)
    norms_a = np.linalg.norm(embed_a, axis=1)
    norms_b = np.linalg.norm(embed_b, axis=1)
    assert np.all(norms_a > 0) and np.all(norms_b > 0)  # unit-normalisable rows
    cosine = np.sum(embed_a * embed_b, axis=1) / (norms_a * norms_b)
    scores = infer(triton, "spectra_similarity", {"spectrum_a": a, "spectrum_b": b}).reshape(-1)
    np.testing.assert_allclose(cosine, scores, atol=1e-4)

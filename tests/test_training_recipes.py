"""The recipes without TensorFlow: one list of names drives the CLI and the docs, every name
has a recipe, card words follow the data actually loaded, --seed reaches the data, and the
version rule is the repository's."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pandas", reason="loaders need the `train` extra")
pytest.importorskip("matplotlib", reason="the pipeline needs the `train` extra")

from tests.helpers.paths import ROOT  # noqa: E402
from tests.helpers.spectra_files import write_mgf_library  # noqa: E402
from zooserve.repository.publish import next_version  # noqa: E402
from zooserve.training.data.images import DOLLAR_STREET_FILES  # noqa: E402
from zooserve.training.data.spectra import load_synthetic_spectra  # noqa: E402
from zooserve.training.recipes import MODEL_NAMES, digits, digits_transfer, lookup, spectra  # noqa: E402
from zooserve.training.spec import TrainOptions  # noqa: E402

DOCS = ROOT / "docs" / "training.md"


def test_every_name_has_its_recipe():
    for name in MODEL_NAMES:
        spec = lookup(name)
        assert spec.name == name
        trainer = lookup(spec.trained_by) if spec.trained_by else spec
        assert trainer.load and trainer.build and trainer.fit
    with pytest.raises(KeyError, match="known: penguins"):
        lookup("nope")


def test_train_help_lists_exactly_the_names():
    command = [sys.executable, "-m", "zooserve", "train", "--help"]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    help_text = " ".join(result.stdout.split())  # argparse wraps long help lines
    assert ", ".join(MODEL_NAMES) in help_text
    assert "--verbose" in help_text


def test_training_docs_table_lists_exactly_the_names():
    rows = re.findall(r"^\| `([a-z_]+)` \| `", DOCS.read_text(), flags=re.MULTILINE)
    assert rows == MODEL_NAMES


@pytest.fixture
def dollar_street(tmp_path) -> Path:
    """A tiny stand-in for the lesson's Dollar Street folder: four .npy files, 10 classes."""
    rng = np.random.default_rng(0)
    images = {"train": 20, "test": 10}
    for split, count in images.items():
        pixels = rng.integers(0, 256, (count, 64, 64, 3), dtype=np.uint8)
        np.save(tmp_path / f"{split}_images.npy", pixels)
        np.save(tmp_path / f"{split}_labels.npy", np.arange(count) % 10)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(DOLLAR_STREET_FILES)
    return tmp_path


def test_dollar_street_cards_describe_household_objects(dollar_street):
    options = TrainOptions(data=str(dollar_street))
    for recipe in (digits, digits_transfer):
        dataset = recipe.load_data(options) if recipe is digits else _transfer_task(options)
        text = recipe.describe(dataset)
        words = f"{text.description} {text.inputs} {text.output}"
        assert "Household object" in text.description, text.description
        assert "digit" not in words.lower(), words
        assert text.inputs == {"image": "64x64x3 colour photo, raw pixel values 0-255"}
        assert all(label in text.description for label in dataset.labels)


def _transfer_task(options: TrainOptions):
    """The transfer recipe's classes 5-9, without the 10-per-class cut the tiny set lacks."""
    from zooserve.training.data.images import only_classes

    everything = digits.load_data(options)
    return only_classes(everything, digits_transfer.TASK_CLASSES, f"{everything.name} (5-9)")


def test_default_data_keeps_the_digit_words():
    text = digits.describe(digits.load_data(TrainOptions()))
    assert text.description == "Handwritten digit 0-9 in a 28x28 grey image (MNIST)."
    transfer = digits_transfer.describe(digits_transfer.load_data(TrainOptions()))
    assert transfer.description.startswith("Handwritten digit 5-9")


def test_seed_reaches_the_simulated_spectra():
    small = {"molecules": 160, "train_pairs": 200, "test_pairs": 50}
    same = load_synthetic_spectra(**small, seed=0), load_synthetic_spectra(**small, seed=0)
    other = load_synthetic_spectra(**small, seed=1)
    assert np.array_equal(same[0].x_test[0], same[1].x_test[0])
    assert not np.array_equal(same[0].x_test[0], other.x_test[0])
    # The recipe hands --seed on: the default run's data changes with it.
    seeded = spectra.load_data(TrainOptions(seed=1))
    assert "seed 1" in seeded.source
    assert not np.array_equal(seeded.y_test, spectra.load_data(TrainOptions()).y_test)


def test_seed_reaches_the_mgf_split(tmp_path):
    data = str(write_mgf_library(tmp_path, 20))
    splits = [spectra.load_data(TrainOptions(data=data, seed=seed)) for seed in (0, 1)]
    assert [split.split[-8:] for split in splits] == ["(seed 0)", "(seed 1)"]
    assert not np.array_equal(splits[0].extras["test_spectra"], splits[1].extras["test_spectra"])


def test_next_version_follows_the_repository_rule(tmp_path):
    assert next_version(tmp_path, overwrite=False) == 1
    for folder in ("1", "3", "007", "0", ".staging-x", "latest"):
        (tmp_path / folder).mkdir()
    assert next_version(tmp_path, overwrite=False) == 4  # not 8: `007` is no version folder
    assert next_version(tmp_path, overwrite=True) == 3

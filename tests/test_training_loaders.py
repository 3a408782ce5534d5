"""Data loaders: same return shape, offline, and one-line errors that say where to get a file.

No TensorFlow here: the loaders need only NumPy, pandas and scikit-learn.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("pandas", reason="loaders need the `train` extra")
pytest.importorskip("sklearn", reason="loaders need the `train` extra")

from tests.helpers.spectra_files import write_mgf_library
from zooserve.training.data import images, penguins, spectra, weather  # noqa: E402
from zooserve.training.data.dataset import DataFileMissing, Dataset  # noqa: E402
from zooserve.training.recipes import digits  # noqa: E402
from zooserve.training.recipes import spectra as spectra_recipe  # noqa: E402
from zooserve.training.spec import TrainOptions  # noqa: E402


def _check(dataset: Dataset) -> None:
    assert isinstance(dataset, Dataset)
    assert len(dataset.sha256) == 64 and dataset.source and dataset.split
    for x, y in ((dataset.x_train, dataset.y_train), (dataset.x_test, dataset.y_test)):
        arrays = x if isinstance(x, tuple) else (x,)
        assert all(len(a) == len(y) for a in arrays) and len(y) > 0
        assert all(a.dtype == np.float32 for a in arrays) and y.dtype == np.float32


def test_penguins():
    dataset = penguins.load_penguins()
    _check(dataset)
    assert dataset.labels == ["Adelie", "Chinstrap", "Gentoo"]
    assert dataset.feature_names == penguins.PENGUIN_FEATURES
    assert (dataset.rows, dataset.test_rows) == (342, 69)
    # Stratified: every species in the test split in proportion.
    assert dataset.y_test.sum(axis=0).tolist() == [30.0, 14.0, 25.0]


def test_seattle_weather_is_chronological_with_persistence():
    dataset = weather.load_seattle_weather()
    _check(dataset)
    assert len(dataset.feature_names) == dataset.x_train.shape[1] == 15
    persistence = dataset.extras["test_persistence"]
    today = dataset.x_test[:, dataset.feature_names.index("temp_max")]
    assert np.array_equal(persistence.reshape(-1), today)
    # Tomorrow's target is the next row's "today": the split kept day order.
    assert np.array_equal(dataset.y_test[:-1, 0], today[1:])


def test_mnist_5k_raw_pixels():
    dataset = images.load_mnist_5k()
    _check(dataset)
    assert dataset.x_train.shape[1:] == (28, 28, 1)
    assert dataset.x_train.max() == 255 and dataset.labels == [str(d) for d in range(10)]
    assert (dataset.rows, dataset.test_rows) == (5000, 1000)


def test_transfer_task_split():
    task = images.few_per_class(
        images.only_classes(images.load_mnist_5k(), [5, 6, 7, 8, 9], "5-9"), 10
    )
    assert task.labels == ["5", "6", "7", "8", "9"]
    assert task.y_train.sum(axis=0).tolist() == [10.0] * 5
    assert task.test_rows == 500


def test_synthetic_spectra_pairs():
    dataset = spectra.load_synthetic_spectra(molecules=160, train_pairs=200, test_pairs=50)
    _check(dataset)
    a, b = dataset.x_train
    assert a.shape == b.shape == (200, 200)
    assert 0.0 <= dataset.y_train.min() and dataset.y_train.max() <= 1.0
    assert dataset.y_train.std() > 0.1  # similar and dissimilar pairs both present
    assert dataset.extras["test_spectra"].shape[1] == 200
    again = spectra.load_synthetic_spectra(molecules=160, train_pairs=200, test_pairs=50)
    assert np.array_equal(again.x_test[0], dataset.x_test[0])  # seeded


def test_subset_keeps_the_first_samples():
    dataset = weather.load_seattle_weather().subset(10)
    assert len(dataset.y_train) == 10 and dataset.test_rows == 10
    assert len(dataset.extras["test_persistence"]) == 10


def test_dollar_street_from_npy_files(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "train_images.npy", rng.integers(0, 256, (6, 64, 64, 3), dtype=np.uint8))
    np.save(tmp_path / "train_labels.npy", np.arange(6).reshape(-1, 1))
    np.save(tmp_path / "test_images.npy", rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8))
    np.save(tmp_path / "test_labels.npy", np.arange(4))
    dataset = digits.load_data(TrainOptions(data=str(tmp_path)))
    _check(dataset)
    assert dataset.x_train.shape == (6, 64, 64, 3) and dataset.y_train.shape == (6, 10)
    assert dataset.labels[3] == "running shoe"


def test_spectra_from_mgf_and_json(tmp_path):
    mgf = write_mgf_library(tmp_path, 10)
    dataset = spectra_recipe.load_data(TrainOptions(data=str(mgf)))
    _check(dataset)
    assert dataset.x_train[0].shape[1] == 200
    assert dataset.extras["test_spectra"].shape == (2, 200)
    assert np.isclose(dataset.x_train[0].max(), 1.0)


@pytest.mark.parametrize(
    ("load", "missing", "where"),
    [
        (lambda p: weather.load_weather_csv(p / "w.csv"), "w.csv", "Zenodo record 5071376"),
        (lambda p: images.load_dollar_street(p), "train_images.npy", "Zenodo record 10970014"),
        (lambda p: spectra.load_spectra_files(p / "x.mgf"), "x.mgf", "MGF"),
    ],
)
def test_missing_file_error_names_file_and_source(tmp_path, load, missing, where):
    with pytest.raises(DataFileMissing) as caught:
        load(tmp_path)
    message = str(caught.value)
    assert len(message.splitlines()) == 1
    assert missing in message and where in message


def test_missing_scores_json_is_named(tmp_path):
    (tmp_path / "x.mgf").write_text("BEGIN IONS\nTITLE=a\n100 1\nEND IONS\n")
    with pytest.raises(DataFileMissing, match=r"x\.json.*Tanimoto"):
        spectra.load_spectra_files(tmp_path / "x.mgf")


def test_training_cli_imports_no_tensorflow():
    """The serving CLI imports zooserve.training.cli to add its commands: that must stay light."""
    code = (
        "import sys, argparse; import zooserve.training.cli as c; "
        "p = argparse.ArgumentParser(); c.add_training_commands(p.add_subparsers()); "
        "heavy = [m for m in ('tensorflow', 'keras', 'tf2onnx', 'onnx', 'pandas') "
        "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

"""`zooserve export PATH --name NAME`: a user's own Keras model (.keras, legacy .h5, a
SavedModel folder) into a model repository, and every way it refuses bad input without
writing anything.

Tiny models are trained once per module, in this process; each export runs as a real
`python -m zooserve export` subprocess against a temporary repository and ledger.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="export tests need the `train` extra")
pytest.importorskip("tf2onnx", reason="export tests need the `train` extra")

from tests.helpers.own_keras_models import (  # noqa: E402
    CUSTOM_LAYERS,
    FEATURES,
    SHAPES,
    SPECIES,
    build_classifier,
    build_cnn,
    fit,
    penguin_like,
    save_three_ways,
    shape_images,
)
from tests.helpers.paths import ROOT  # noqa: E402
from tests.helpers.server import run_server  # noqa: E402
from tests.helpers.tensorflow_noise import noisy_tensorflow_env  # noqa: E402
from zooserve.repository.layout import sha256_of_file  # noqa: E402

# Models trained and exported with TensorFlow: minutes.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """The trained models in each format, their test files, the custom-layer models."""
    import keras

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("own_models")
    x, classes = penguin_like(300, seed=1)
    penguins = build_classifier(keras, x)
    fit(penguins, x, classes, epochs=20)
    images, image_classes = shape_images(240, seed=2)
    cnn = build_cnn(keras)
    fit(cnn, images, image_classes, epochs=5)

    x_test, test_classes = penguin_like(60, seed=3)
    table = folder / "penguins_test.csv"
    with open(table, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow([*FEATURES, "species"])
        for row, label in zip(x_test, test_classes, strict=True):
            writer.writerow([*(f"{v:.6g}" for v in row), SPECIES[label]])
    image_test, image_test_classes = shape_images(50, seed=4)
    npz = folder / "images_test.npz"
    np.savez(npz, x=image_test, y=image_test_classes)

    custom_module = folder / "my_layers.py"
    custom_module.write_text(CUSTOM_LAYERS)
    spec = importlib.util.spec_from_file_location("my_layers", custom_module)
    layers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layers)
    custom = {}
    for name in ("Doubler", "NumpyClip", "BatchCentre"):
        inputs = keras.Input(shape=(4,), name="features")
        hidden = getattr(layers, name)()(inputs)
        model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden))
        custom[name] = folder / f"{name.lower()}.keras"
        model.save(custom[name])

    not_a_model = folder / "notes.keras"
    not_a_model.write_text("these are my notes, not a model\n")
    return {
        "penguins": save_three_ways(penguins, folder, "penguins"),
        "penguins_model": penguins,
        "cnn": save_three_ways(cnn, folder, "cnn"),
        "cnn_model": cnn,
        "penguins_csv": table,
        "penguins_x": x_test,
        "penguins_y": test_classes,
        "images_npz": npz,
        "images_x": image_test,
        "images_y": image_test_classes,
        "custom_module": custom_module,
        "custom": custom,
        "not_a_model": not_a_model,
    }


# -- running the command ---------------------------------------------------------------------


def zooserve_export(*args, models: Path, ledger: Path) -> subprocess.CompletedProcess:
    """A real `zooserve export` process, in which TensorFlow's import writes its AVX-512
    start-up lines on any CPU: an error must still be one line."""
    command = [sys.executable, "-m", "zooserve", "export", *map(str, args),
               "--models", str(models), "--ledger", str(ledger)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env=_noisy_env())


@functools.cache
def _noisy_env() -> dict:
    return noisy_tensorflow_env(Path(tempfile.mkdtemp(prefix="zooserve-tf-noise-")))


def _snapshot(models: Path, ledger: Path) -> dict:
    """Every file (hidden ones too) and folder under the repository, with contents, and the
    ledger's bytes."""
    files = {}
    if models.exists():
        for path in sorted(models.rglob("*")):
            relative = path.relative_to(models).as_posix()
            files[relative] = path.read_bytes() if path.is_file() else "folder"
    return {"models_exists": models.exists(), "files": files,
            "ledger": ledger.read_bytes() if ledger.exists() else None}  # fmt: skip


def _card(folder: Path) -> dict:
    return json.loads((folder / "card.json").read_text())


def _ledger_rows(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def _onnx_predict(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {name: x.astype("float32")})[0]


@pytest.fixture(scope="module")
def repository(files, tmp_path_factory) -> dict:
    """The successful exports, run once into one repository: the penguin exports one after
    another (versions 1, 2, 3) while the CNN's run beside them, with a ledger each."""
    root = tmp_path_factory.mktemp("export_repo")
    models = root / "models"
    ledger, cnn_ledger = root / "results" / "ledger.csv", root / "results" / "cnn_ledger.csv"
    penguins, cnn = files["penguins"], files["cnn"]
    penguin_runs = {
        "keras": [
            penguins["keras"],
            "--name",
            "my_penguins",
            "--labels",
            ",".join(SPECIES),
            "--feature-names",
            ",".join(FEATURES),
            "--test",
            files["penguins_csv"],
            "--target",
            "species",
            "--description",
            "My penguin classifier.",
        ],
        "h5": [penguins["h5"], "--name", "my_penguins"],
        "saved_model": [
            penguins["saved_model"],
            "--name",
            "my_penguins",
            "--labels",
            ",".join(SPECIES),
            "--input-names",
            "features",
            "--output-name",
            "probabilities",
            "--test",
            files["penguins_csv"],
            "--target",
            "species",
        ],
    }
    cnn_runs = {
        "cnn": [
            cnn["h5"], "--name", "my_cnn", "--labels", ",".join(SHAPES),
            "--test", files["images_npz"], "--input-range", "0,255",
        ],
        "cnn_saved_model": [cnn["saved_model"], "--name", "my_cnn", "--input-range", "0,255"],
    }  # fmt: skip

    def run_in_turn(runs: dict, ledger: Path) -> dict:
        return {
            key: zooserve_export(*args, models=models, ledger=ledger) for key, args in runs.items()
        }

    with ThreadPoolExecutor(2) as pool:
        both = [pool.submit(run_in_turn, penguin_runs, ledger),
                pool.submit(run_in_turn, cnn_runs, cnn_ledger)]  # fmt: skip
        runs = {**both[0].result(), **both[1].result()}
    return {"models": models, "ledger": ledger, "cnn_ledger": cnn_ledger, "runs": runs}


# -- what a successful export writes ---------------------------------------------------------


def test_every_format_exports(repository):
    for label, run in repository["runs"].items():
        assert run.returncode == 0, f"{label}: {run.stderr}"
        assert "exported" in run.stdout
    models = repository["models"]
    assert sorted(p.name for p in (models / "my_penguins").iterdir()) == ["1", "2", "3"]
    assert sorted(p.name for p in (models / "my_cnn").iterdir()) == ["1", "2"]
    for folder in [*(models / "my_penguins").iterdir(), *(models / "my_cnn").iterdir()]:
        assert sorted(p.name for p in folder.iterdir()) == ["card.json", "model.onnx"]


def test_card_of_a_keras_file_with_a_test_csv(repository, files):
    card = _card(repository["models"] / "my_penguins" / "1")
    assert card["name"] == "my_penguins" and card["version"] == 1
    assert card["task"] == "classification"
    assert card["description"] == "My penguin classifier."
    assert card["labels"] == SPECIES
    assert card["feature_names"] == FEATURES
    assert [(i["name"], i["shape"]) for i in card["inputs"]] == [("features", [-1, 4])]
    assert [(o["name"], o["shape"]) for o in card["outputs"]] == [("probabilities", [-1, 3])]
    # The metric is the Keras model's accuracy on the CSV's rows.
    keras_classes = files["penguins_model"].predict(files["penguins_x"], verbose=0).argmax(1)
    accuracy = float(np.mean(keras_classes == files["penguins_y"]))
    assert card["primary_metric"] == "accuracy"
    assert card["metrics"]["accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert "loss" in card["metrics"]
    assert card["dataset"]["test_rows"] == 60
    assert card["dataset"]["test_sha256"] == sha256_of_file(files["penguins_csv"])
    assert card["source"]["exported_from"] == "penguins.keras"
    assert card["source"]["format"] == "keras"
    assert card["source"]["sha256"] == sha256_of_file(files["penguins"]["keras"])
    assert card["source"]["keras"] == card["libraries"]["keras"]
    assert card["training"]["trained_here"] is False
    onnx = card["onnx"]
    assert onnx["parity_inputs"] == "test file penguins_test.csv (60 rows)"
    assert onnx["parity_max_abs_diff"] <= 1e-5
    assert onnx["sha256"] == sha256_of_file(repository["models"] / "my_penguins/1/model.onnx")


def test_card_of_an_h5_file_without_test_data(repository, files):
    card = _card(repository["models"] / "my_penguins" / "2")
    assert card["source"]["format"] == "h5"
    assert card["source"]["sha256"] == sha256_of_file(files["penguins"]["h5"])
    assert card["onnx"]["parity_inputs"] == "generated: 64 rows, normal(0, 1), seed 0"
    assert "metrics" not in card and "labels" not in card
    # No labels, but the output is class probabilities: a classifier.
    assert card["task"] == "classification"
    assert [i["name"] for i in card["inputs"]] == ["features"]


def test_card_of_a_saved_model_folder(repository, files):
    card = _card(repository["models"] / "my_penguins" / "3")
    folder = files["penguins"]["saved_model"]
    assert card["source"]["format"] == "saved_model"
    assert card["source"]["exported_from"] == folder.name
    assert len(card["source"]["sha256"]) == 64
    assert card["source"]["sha256"] != sha256_of_file(folder / "saved_model.pb")
    assert card["labels"] == SPECIES
    assert [i["name"] for i in card["inputs"]] == ["features"]
    assert [o["name"] for o in card["outputs"]] == ["probabilities"]
    assert card["metrics"] == _card(repository["models"] / "my_penguins" / "1")["metrics"]


def test_cnn_card_and_metric_from_npz(repository, files):
    card = _card(repository["models"] / "my_cnn" / "1")
    keras_classes = files["cnn_model"].predict(files["images_x"], verbose=0).argmax(1)
    assert card["metrics"]["accuracy"] == pytest.approx(
        float(np.mean(keras_classes == files["images_y"])), abs=1e-4
    )
    assert [(i["name"], i["shape"]) for i in card["inputs"]] == [("image", [-1, 8, 8, 1])]
    assert card["onnx"]["parity_inputs"] == "test file images_test.npz (50 rows)"
    saved = _card(repository["models"] / "my_cnn" / "2")
    assert saved["onnx"]["parity_inputs"] == "generated: 64 rows, uniform(0, 255), seed 0"
    assert saved["source"]["format"] == "saved_model"


def test_onnx_predicts_what_keras_predicts(repository, files):
    models = repository["models"]
    for version in (1, 2, 3):
        predicted = _onnx_predict(
            models / f"my_penguins/{version}/model.onnx", "features", files["penguins_x"]
        )
        expected = files["penguins_model"].predict(files["penguins_x"], verbose=0)
        assert np.array_equal(predicted.argmax(1), expected.argmax(1))
    predicted = _onnx_predict(models / "my_cnn/1/model.onnx", "image", files["images_x"])
    expected = files["cnn_model"].predict(files["images_x"], verbose=0)
    assert np.array_equal(predicted.argmax(1), expected.argmax(1))


def test_ledger_rows_record_each_export(repository, files):
    rows = _ledger_rows(repository["ledger"])
    assert [(r["model"], r["version"]) for r in rows] == [
        ("my_penguins", "1"), ("my_penguins", "2"), ("my_penguins", "3"),
    ]  # fmt: skip
    cnn_rows = _ledger_rows(repository["cnn_ledger"])
    assert [(r["model"], r["version"]) for r in cnn_rows] == [("my_cnn", "1"), ("my_cnn", "2")]
    assert (
        json.loads(cnn_rows[0]["metrics"])["accuracy"]
        == _card(repository["models"] / "my_cnn" / "1")["metrics"]["accuracy"]
    )
    first = rows[0]
    assert first["task"] == "classification"
    assert (
        json.loads(first["metrics"])["accuracy"]
        == _card(repository["models"] / "my_penguins" / "1")["metrics"]["accuracy"]
    )
    assert first["test_set"] == "penguins_test.csv" and first["test_rows"] == "60"
    assert sha256_of_file(files["penguins"]["keras"]) in first["source"]
    assert rows[1]["test_set"] == "" and json.loads(rows[1]["metrics"]) == {}


def test_an_exported_model_is_served(repository, files, tmp_path):
    import tritonclient.grpc as grpcclient

    x = files["penguins_x"][:5]
    with run_server(repository["models"], tmp_path) as server:
        client = grpcclient.InferenceServerClient(server.url)
        try:
            config = client.get_model_config("my_penguins").config
            assert json.loads(config.parameters["labels"].string_value) == SPECIES
            tensor = grpcclient.InferInput("features", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            result = client.infer("my_penguins", [tensor], model_version="1")
            served = result.as_numpy("probabilities")
        finally:
            client.close()
    expected = files["penguins_model"].predict(x, verbose=0)
    assert np.array_equal(served.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(served, expected, atol=1e-5)


# -- bad input: one line, a status, nothing written ------------------------------------------


@pytest.fixture()
def populated(repository, tmp_path) -> dict:
    """A copy of the repository and ledger the successful exports wrote."""
    models, ledger = tmp_path / "models", tmp_path / "ledger.csv"
    shutil.copytree(repository["models"], models)
    shutil.copy(repository["ledger"], ledger)
    return {"models": models, "ledger": ledger}


def _refused(populated: dict, *args, status: int = 2) -> str:
    """Run an export that must fail; check status, one stderr line, nothing written."""
    before = _snapshot(populated["models"], populated["ledger"])
    run = zooserve_export(*args, models=populated["models"], ledger=populated["ledger"])
    lines = run.stderr.strip().splitlines()
    assert run.returncode == status, run.stderr
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("zooserve export: error: ")
    assert _snapshot(populated["models"], populated["ledger"]) == before
    return lines[0]


def test_a_path_that_does_not_exist(populated, tmp_path):
    line = _refused(populated, tmp_path / "missing.keras", "--name", "new_model")
    assert "missing.keras does not exist" in line


def test_a_file_that_is_not_a_model(populated, files):
    line = _refused(populated, files["not_a_model"], "--name", "new_model")
    assert "notes.keras is not a Keras model" in line


def test_a_folder_that_is_not_a_saved_model(populated, tmp_path):
    (tmp_path / "empty").mkdir()
    line = _refused(populated, tmp_path / "empty", "--name", "new_model")
    assert "not a TensorFlow SavedModel" in line


def test_a_custom_layer_not_provided(populated, files):
    line = _refused(populated, files["custom"]["Doubler"], "--name", "my_penguins")
    assert "'Doubler'" in line and "--custom-objects module.py" in line


def test_a_custom_layer_provided_exports(files, tmp_path):
    models, ledger = tmp_path / "models", tmp_path / "ledger.csv"
    run = zooserve_export(
        files["custom"]["Doubler"], "--name", "doubled", "--custom-objects",
        files["custom_module"], models=models, ledger=ledger,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert _card(models / "doubled" / "1")["onnx"]["parity_max_abs_diff"] <= 1e-5


def test_an_op_the_converter_cannot_handle(populated, files):
    line = _refused(
        populated, files["custom"]["NumpyClip"], "--name", "clipped",
        "--custom-objects", files["custom_module"],
    )  # fmt: skip
    assert "cannot handle TensorFlow op PyFuncStateless" in line
    assert "tf.numpy_function" in line and "numpy_clip" in line


def test_labels_that_do_not_match_the_output(populated, files, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("Adelie\nGentoo\n")
    line = _refused(populated, files["penguins"]["keras"], "--name", "my_penguins",
                    "--labels", labels)  # fmt: skip
    assert "--labels gives 2 labels" in line and "[-1, 3]" in line


@pytest.mark.parametrize("name", ["../escape", ".hidden", "has space", "x" * 65, "ümlaut"])
def test_a_name_that_is_not_a_model_name(populated, files, name):
    line = _refused(populated, files["penguins"]["keras"], "--name", name)
    assert "is not a valid model name" in line


def test_a_test_file_that_does_not_fit(populated, files, tmp_path):
    table = tmp_path / "three_columns.csv"
    table.write_text("a,b,c,species\n1,2,3,Adelie\n")
    line = _refused(
        populated, files["penguins"]["keras"], "--name", "my_penguins", "--test", table,
        "--target", "species", "--labels", ",".join(SPECIES),
    )  # fmt: skip
    assert "has 3 feature columns" in line and "takes 4" in line
    line = _refused(
        populated, files["penguins"]["keras"], "--name", "my_penguins",
        "--test", files["penguins_csv"], "--target", "kind",
    )  # fmt: skip
    assert "no column 'kind'" in line


def test_a_test_file_for_images_with_the_wrong_shape(populated, files, tmp_path):
    npz = tmp_path / "wrong.npz"
    np.savez(npz, x=np.zeros((4, 28, 28, 1), "float32"), y=np.zeros(4))
    line = _refused(populated, files["cnn"]["keras"], "--name", "my_cnn", "--test", npz)
    assert "input 'image' has shape [4, 28, 28, 1]" in line and "[rows, 8, 8, 1]" in line


def test_parity_beyond_tolerance(files, tmp_path):
    """Exit 1, the worst difference said, and the repository and model folders this export
    would have created are gone again."""
    models, ledger = tmp_path / "new" / "models", tmp_path / "ledger.csv"
    run = zooserve_export(
        files["custom"]["BatchCentre"], "--name", "centred", "--custom-objects",
        files["custom_module"], models=models, ledger=ledger,
    )  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1, run.stderr
    assert len(lines) == 1 and lines[0].startswith("zooserve export: error: ONNX and Keras ")
    assert "differ by up to" in lines[0] and "(worst at output[" in lines[0]
    assert "generated: 64 rows, normal(0, 1), seed 0" in lines[0]
    assert ".staging-" not in lines[0]
    assert not (tmp_path / "new").exists() and not ledger.exists()

"""Every training path on a tiny subset: it builds, trains, exports with parity, ships a card,
plots and a ledger row. One module so TensorFlow is imported and the tiny zoo trained once.

Everything is written to a temporary model repository and ledger, never the real ones.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training tests need the `train` extra")
pytest.importorskip("tf2onnx", reason="training tests need the `train` extra")

from zooserve.training.__main__ import main  # noqa: E402

SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
# Expected served signatures: name -> (inputs {name: shape}, output name, output shape, labels)
SIGNATURES = {
    "penguins": ({"features": [-1, 4]}, "probabilities", [-1, 3], SPECIES),
    "weather": ({"features": [-1, 15]}, "prediction", [-1, 1], None),
    "digits": ({"image": [-1, 28, 28, 1]}, "probabilities", [-1, 10], [str(d) for d in range(10)]),
    "digits_transfer": (
        {"image": [-1, 28, 28, 1]}, "probabilities", [-1, 5], [str(d) for d in range(5, 10)]
    ),
    "spectra_similarity": (
        {"spectrum_a": [-1, 200], "spectrum_b": [-1, 200]}, "similarity", [-1, 1], None
    ),
    "spectra_embedding": ({"spectrum": [-1, 200]}, "embedding", [-1, 200], None),
}  # fmt: skip
# The card contract of docs/model-repository.md.
CARD_KEYS = {
    "name", "version", "task", "description", "inputs", "outputs", "metrics", "primary_metric",
    "dataset", "training", "libraries", "git_commit", "created", "onnx",
}  # fmt: skip
QUICK = ["--epochs", "1", "--subset", "64"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


# Every recipe trained for real (TensorFlow): minutes.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict:
    """Train every model once, tiny, into a temporary repository and ledger."""
    root = tmp_path_factory.mktemp("zoo")
    models, ledger = root / "models", root / "ledger.csv"
    codes = {}
    # spectra_similarity ships spectra_embedding too, so five runs give six models.
    for name in ["penguins", "weather", "digits", "digits_transfer", "spectra_similarity"]:
        codes[name] = main(
            ["train", name, "--models", str(models), "--ledger", str(ledger), *QUICK]
        )
    return {"models": models, "ledger": ledger, "codes": codes}


def _card(zoo: dict, name: str, version: int = 1) -> dict:
    return json.loads((zoo["models"] / name / str(version) / "card.json").read_text())


def _ledger_rows(path: Path) -> list[dict]:
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def test_every_run_succeeds(zoo):
    assert zoo["codes"] == dict.fromkeys(zoo["codes"], 0)


@pytest.mark.parametrize("name", list(SIGNATURES))
def test_card_follows_the_contract(zoo, name):
    card = _card(zoo, name)
    inputs, output, output_shape, labels = SIGNATURES[name]
    assert CARD_KEYS <= set(card)
    assert card["name"] == name and card["version"] == 1
    assert {i["name"]: i["shape"] for i in card["inputs"]} == inputs
    assert [(o["name"], o["shape"]) for o in card["outputs"]] == [(output, output_shape)]
    assert all(t["datatype"] == "FP32" for t in card["inputs"] + card["outputs"])
    assert card.get("labels") == labels
    assert card["primary_metric"] in card["metrics"]
    assert card["onnx"]["opset"] in (17, 18)
    assert card["onnx"]["parity_max_abs_diff"] <= 1e-5
    assert card["dataset"]["test_rows"] > 0 and len(card["dataset"]["sha256"]) == 64


@pytest.mark.parametrize("name", list(SIGNATURES))
def test_onnx_file_matches_card_and_checks(zoo, name):
    import hashlib

    import onnx
    import onnxruntime

    folder = zoo["models"] / name / "1"
    card = _card(zoo, name)
    data = (folder / "model.onnx").read_bytes()
    assert hashlib.sha256(data).hexdigest() == card["onnx"]["sha256"]
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto, full_check=True)
    metadata = {p.key: p.value for p in proto.metadata_props}
    if card.get("labels"):
        assert json.loads(metadata["labels"]) == card["labels"]
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    # Only the served inputs: no constant leaked out as a graph input; the batch axis is dynamic.
    assert [i.name for i in session.get_inputs()] == [i["name"] for i in card["inputs"]]
    feeds = {i["name"]: np.ones([3, *i["shape"][1:]], dtype=np.float32) for i in card["inputs"]}
    (result,) = session.run(None, feeds)
    assert result.shape == (3, *card["outputs"][0]["shape"][1:])


def test_ledger_gains_a_row_per_shipped_model(zoo):
    rows = _ledger_rows(zoo["ledger"])
    assert [r["model"] for r in rows] == list(SIGNATURES)
    for row in rows:
        assert json.loads(row["metrics"]) and len(row["test_sha256"]) == 64
        assert row["git_commit"] and row["created"]


def test_plots_are_valid_pngs(zoo):
    from PIL import Image

    for name in SIGNATURES:
        card = _card(zoo, name)
        expected = (
            "confusion_matrix.png" if card["task"] == "classification" else "predicted_vs_true.png"
        )
        assert set(card["plots"]) == {"training_curves.png", expected}
        for png in card["plots"]:
            path = zoo["models"] / name / "1" / png
            assert path.read_bytes()[:8] == PNG_SIGNATURE
            with Image.open(path) as image:
                image.verify()


def test_baselines_are_in_card_and_ledger(zoo):
    assert set(_card(zoo, "weather")["baselines"]) == {"persistence"}
    assert set(_card(zoo, "digits_transfer")["baselines"]) == {"scratch"}
    assert "base" in _card(zoo, "digits_transfer")["training"]
    rows = {r["model"]: r for r in _ledger_rows(zoo["ledger"])}
    assert "persistence" in json.loads(rows["weather"]["baselines"])
    assert "scratch" in json.loads(rows["digits_transfer"]["baselines"])


def test_new_version_then_overwrite(zoo, capsys):
    models, ledger = zoo["models"], zoo["ledger"]
    before = len(_ledger_rows(ledger))
    args = ["train", "penguins", "--models", str(models), "--ledger", str(ledger), *QUICK]
    assert main(args) == 0
    assert (models / "penguins" / "2" / "model.onnx").is_file()
    assert main([*args, "--overwrite"]) == 0
    versions = sorted(p.name for p in (models / "penguins").iterdir())
    assert versions == ["1", "2"]  # no staging folder left behind
    assert _card(zoo, "penguins", 2)["version"] == 2
    assert len(_ledger_rows(ledger)) == before + 2
    capsys.readouterr()
    assert main(["results", "--ledger", str(ledger)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("created") and "model" in table[0]
    assert len(table) == 2 + before + 2
    created = [line.split()[0] for line in table[2:]]
    assert created == sorted(created, reverse=True)


def test_spectra_embedding_trains_the_pair(tmp_path):
    models, ledger = tmp_path / "models", tmp_path / "ledger.csv"
    args = ["--models", str(models), "--ledger", str(ledger), "--epochs", "1", "--subset", "32"]
    assert main(["train", "spectra_embedding", *args]) == 0
    assert sorted(p.name for p in models.iterdir()) == ["spectra_embedding", "spectra_similarity"]
    assert [r["model"] for r in _ledger_rows(ledger)] == [
        "spectra_similarity", "spectra_embedding"
    ]  # fmt: skip


def test_transfer_from_a_user_weights_file(tmp_path):
    from zooserve.training.recipes.digits import image_classifier

    weights = tmp_path / "base.weights.h5"
    image_classifier((28, 28, 1), classes=5).save_weights(weights)
    models, ledger = tmp_path / "models", tmp_path / "ledger.csv"
    code = main(
        ["train", "digits_transfer", "--weights", str(weights), "--models", str(models),
         "--ledger", str(ledger), *QUICK]
    )  # fmt: skip
    assert code == 0
    card = json.loads((models / "digits_transfer" / "1" / "card.json").read_text())
    assert card["training"]["base"]["source"] == "user weights base.weights.h5"


def test_weather_from_the_lessons_csv(tmp_path):
    """The real-data path, on a small file in the lesson's column layout."""
    rng = np.random.default_rng(0)
    days = 120
    columns = {
        "DATE": [20000101 + i for i in range(days)],
        "MONTH": [1 + (i // 31) % 12 for i in range(days)],
        "BASEL_cloud_cover": rng.integers(0, 9, days),
        "BASEL_sunshine": rng.uniform(0, 12, days).round(1),
        "DE_BILT_temp_mean": rng.normal(10, 5, days).round(1),
    }
    path = tmp_path / "weather_prediction_dataset_light.csv"
    lines = [",".join(columns)] + [
        ",".join(str(columns[c][i]) for c in columns) for i in range(days)
    ]
    path.write_text("\n".join(lines) + "\n")
    models, ledger = tmp_path / "models", tmp_path / "ledger.csv"
    code = main(
        ["train", "weather", "--data", str(path), "--models", str(models), "--ledger",
         str(ledger), "--epochs", "1"]
    )  # fmt: skip
    assert code == 0
    card = json.loads((models / "weather" / "1" / "card.json").read_text())
    assert card["feature_names"] == ["BASEL_cloud_cover", "BASEL_sunshine", "DE_BILT_temp_mean"]
    assert card["inputs"][0]["shape"] == [-1, 3]
    assert card["dataset"]["name"] == "weather_prediction_dataset_light"


def test_missing_data_file_is_a_one_line_error(tmp_path, capsys):
    code = main(["train", "weather", "--data", str(tmp_path / "nope.csv"),
                 "--models", str(tmp_path / "m"), "--ledger", str(tmp_path / "l.csv")])  # fmt: skip
    assert code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "nope.csv" in error and "5071376" in error
    assert not (tmp_path / "m").exists()
    assert not (tmp_path / "l.csv").exists()


def test_parity_failure_raises(zoo):
    from zooserve.training.data.penguins import load_penguins
    from zooserve.training.export import ParityError, check_parity, run_onnx

    path = zoo["models"] / "penguins" / "1" / "model.onnx"
    x = load_penguins().x_test
    good = run_onnx(path, ["features"], x)
    assert check_parity(good, path, ["features"], x) == 0.0
    with pytest.raises(ParityError, match="differ by up to"):
        check_parity(good + 1e-3, path, ["features"], x)

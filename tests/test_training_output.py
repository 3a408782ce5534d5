"""What `train` prints: quiet by default (one progress line per fit, the test metric, where the
files went; no TensorFlow start-up noise), everything with --verbose. And a Dollar Street run's
card says what it learnt."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="training tests need the `train` extra")
pytest.importorskip("tf2onnx", reason="training tests need the `train` extra")

from training.__main__ import main  # noqa: E402
from training.progress import EpochProgress  # noqa: E402

# What TensorFlow's C++ side and absl print when nobody quiets them.
NOISE = ["oneDNN", "absl", "NodeDef", "cpu_feature_guard", "E0000", "W0000", "I0000"]


def _train_penguins(tmp_path: Path, *extra: str) -> str:
    """stdout and stderr of a real `python -m training train penguins --epochs 5`, as a user
    would start it (a fresh process: TensorFlow's C++ logging is set up at import)."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    command = [
        sys.executable, "-m", "training", "train", "penguins", "--epochs", "5",
        "--models", str(tmp_path / "models"), "--ledger", str(tmp_path / "ledger.csv"), *extra,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_quiet_run_is_a_few_readable_lines(tmp_path):
    output = _train_penguins(tmp_path)
    lines = [line for line in output.splitlines() if line.strip()]
    assert not [word for word in NOISE if word in output], output
    assert "Epoch 1/5" not in output and "Model:" not in output, output
    progress = [line for line in lines if "epoch " in line]
    assert 1 <= len(progress) <= 4 and "epoch 5/5" in progress[-1], output
    assert "val_accuracy" in progress[-1] and "loss" in progress[-1]
    assert any("test set of 69" in line for line in lines)
    shipped = f"shipped {tmp_path / 'models' / 'penguins' / '1' / 'model.onnx'}"
    assert shipped in output
    assert len(lines) <= 8, output


def test_verbose_run_keeps_keras_output(tmp_path):
    output = _train_penguins(tmp_path, "--verbose")
    assert all(f"Epoch {n}/5" in output for n in range(1, 6)), output
    assert "Model:" in output and "confusion matrix" in output
    assert f"wrote {tmp_path / 'models' / 'penguins' / '1'}" in output


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _fit_epochs(progress: EpochProgress, epochs: int) -> None:
    progress.on_train_begin()
    for epoch in range(epochs):
        progress.on_epoch_end(epoch, {"loss": 1 / (epoch + 1), "val_accuracy": epoch / 150})
    progress.on_train_end()


def test_progress_in_a_log_is_at_most_four_lines():
    log = io.StringIO()
    _fit_epochs(EpochProgress("penguins", 150, "val_accuracy", stream=log), 150)
    lines = log.getvalue().splitlines()
    assert len(lines) == 4 and "\r" not in log.getvalue()
    assert lines[-1].startswith("penguins: epoch 150/150  loss 0.0067  val_accuracy 0.9933")


def test_progress_on_a_terminal_is_one_line_rewritten():
    terminal = _Terminal()
    _fit_epochs(EpochProgress("digits", 20, "val_accuracy", stream=terminal), 7)
    text = terminal.getvalue()
    assert text.count("\n") == 1 and text.count("\r") == 8
    assert "epoch 7/20" in text.splitlines()[-1].split("\r")[-1]
    assert "early stop" in text


def test_dollar_street_digits_card_names_household_objects(tmp_path):
    rng = np.random.default_rng(0)
    for split, count in {"train": 20, "test": 10}.items():
        np.save(tmp_path / f"{split}_images.npy", rng.integers(0, 256, (count, 64, 64, 3)))
        np.save(tmp_path / f"{split}_labels.npy", np.arange(count) % 10)
    models = tmp_path / "models"
    code = main(
        ["train", "digits", "--data", str(tmp_path), "--models", str(models),
         "--ledger", str(tmp_path / "ledger.csv"), "--epochs", "1"]
    )  # fmt: skip
    assert code == 0
    card = json.loads((models / "digits" / "1" / "card.json").read_text())
    assert card["description"].startswith("Household object in a 64x64 colour photo")
    assert card["inputs"][0]["shape"] == [-1, 64, 64, 3]
    assert card["inputs"][0]["description"] == "64x64x3 colour photo, raw pixel values 0-255"
    assert "digit" not in json.dumps([card["description"], card["inputs"], card["outputs"]])
    assert card["labels"][3] == "running shoe" and card["dataset"]["name"] == "dollar_street_10"

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

from tests.helpers.paths import ROOT  # noqa: E402
from tests.helpers.tensorflow_noise import START_UP_LINES, noisy_tensorflow_env  # noqa: E402
from zooserve.training.__main__ import main  # noqa: E402
from zooserve.training.native_stderr import below_level  # noqa: E402
from zooserve.training.progress import EpochProgress  # noqa: E402

# What TensorFlow's C++ side and absl print when nobody quiets them.
NOISE = ["oneDNN", "absl", "NodeDef", "cpu_feature_guard", "E0000", "W0000", "I0000"]


def _train_penguins(tmp_path: Path, *extra: str) -> str:
    """stdout and stderr of a real `python -m zooserve.training train penguins --epochs 5`, as a
    user would start it (a fresh process: TensorFlow's C++ logging is set up at import), in which
    importing TensorFlow writes its AVX-512 start-up lines whatever the CPU."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env = noisy_tensorflow_env(tmp_path / "noise", base=env)
    command = [
        sys.executable, "-m", "zooserve.training", "train", "penguins", "--epochs", "5",
        "--models", str(tmp_path / "models"), "--ledger", str(tmp_path / "ledger.csv"), *extra,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@pytest.mark.slow  # trains with TensorFlow
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


@pytest.mark.slow  # trains with TensorFlow
def test_verbose_run_keeps_keras_output(tmp_path):
    output = _train_penguins(tmp_path, "--verbose")
    assert all(f"Epoch {n}/5" in output for n in range(1, 6)), output
    # --verbose sets TF_CPP_MIN_LOG_LEVEL 2: C++ errors are shown, info and warnings are not.
    assert START_UP_LINES[3] in output and "oneDNN" not in output, output
    assert "Model:" in output and "confusion matrix" in output
    assert f"wrote {tmp_path / 'models' / 'penguins' / '1'}" in output


@pytest.mark.slow  # trains with TensorFlow
def test_the_start_up_lines_reach_stderr_when_nothing_filters_them(tmp_path):
    """The check above can fail: a plain import in the same environment shows every line."""
    env = noisy_tensorflow_env(tmp_path / "noise")
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    result = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert all(line in result.stderr.splitlines() for line in START_UP_LINES), result.stderr


@pytest.mark.parametrize(("level", "kept"), [
    (0, [0, 1, 2, 3]), (1, [2, 3]), (2, [3]), (3, []),
])  # fmt: skip
def test_the_level_hides_the_lines_below_it(level, kept):
    lines = [line.encode() + b"\n" for line in START_UP_LINES]
    assert [i for i, line in enumerate(lines) if not below_level(line, level)] == kept
    fatal = b"F0000 00:00:1796665352.900000    3224 port.cc:1] a fatal error\n"
    assert not below_level(fatal, level)
    assert not below_level(b"Traceback (most recent call last):\n", level)
    assert not below_level(b"I0000 is not a log line without its file:line]\n", level)


FILTERED_WRITER = """
import ctypes, os, sys
from zooserve.training.native_stderr import native_stderr_filtered

with native_stderr_filtered(3):
    libc = ctypes.CDLL(None)
    for line in sys.argv[1:]:
        data = (line + "\\n").encode()
        libc.write(2, data, len(data))  # as TensorFlow's C++ side writes
    print("a Python warning, kept", file=sys.stderr)
print("after the import", file=sys.stderr)
"""


def test_fd_2_is_filtered_in_order_and_restored():
    lines = [START_UP_LINES[0], "a line of the user's own", *START_UP_LINES[1:]]
    result = subprocess.run([sys.executable, "-c", FILTERED_WRITER, *lines], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "a line of the user's own", "a Python warning, kept", "after the import"]


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

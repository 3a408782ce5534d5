"""How long `zooserve export` takes for a penguins-sized and a CNN-sized Keras model: figures,
never assertions.

    .venv/bin/python -m benchmarks.export_time [--runs 2]

Builds the two architectures untrained (conversion and parity do not depend on the
weights' values) and saves each as `.keras` in a scratch folder:

  penguins-sized: the lesson's episode 2 network, 4 inputs -> Dense 10 relu -> Dense 3 softmax;
  CNN-sized: the zoo's digits network (zooserve/training/recipes/digits.py's image_classifier) on
  28x28x1 images, 10 classes.

Then runs `zooserve export` on each, as a user would (a process of its own, parity on the
generated inputs), `--runs` times, and prints the wall time and the peak RSS of each run.
Most of a run is importing TensorFlow, Keras and tf2onnx, so the import alone is timed too."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IMPORTS = "import tensorflow, keras, tf2onnx, onnx, onnxruntime"

SAVE_MODELS = """
import sys
import keras
from zooserve.training.recipes.digits import image_classifier

folder = sys.argv[1]
keras.utils.set_random_seed(0)
inputs = keras.Input(shape=(4,))
hidden = keras.layers.Dense(10, activation="relu")(inputs)
outputs = keras.layers.Dense(3, activation="softmax")(hidden)
keras.Model(inputs, outputs).save(f"{folder}/penguins_sized.keras")
image_classifier((28, 28, 1), 10).save(f"{folder}/cnn_sized.keras")
"""


def _timed(command: list[str], cwd: Path, env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB; Linux counts ru_maxrss in KiB) of one child process."""
    started = time.perf_counter()
    pid = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
    _, status, usage = os.wait4(pid.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{pid.stderr.read().decode()}")
    return seconds, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory(prefix="zooserve-export-time-") as scratch:
        folder = Path(scratch)
        subprocess.run([sys.executable, "-c", SAVE_MODELS, str(folder)], env=env, check=True,
                       capture_output=True)
        print(f"load average at start: {os.getloadavg()[0]:.2f} "
              f"(cores: {len(os.sched_getaffinity(0))})")
        print(f"{'what':<40} {'run':>3} {'wall s':>7} {'peak RSS MiB':>13}")
        for run in range(1, args.runs + 1):
            seconds, peak = _timed([sys.executable, "-c", IMPORTS], folder, env)
            print(f"{'import TF, Keras, tf2onnx, onnx, ORT':<40} {run:>3} {seconds:>7.2f} "
                  f"{peak:>13.0f}")
            for name in ("penguins_sized", "cnn_sized"):
                command = [sys.executable, "-m", "zooserve", "export", f"{name}.keras",
                           "--name", f"{name}", "--models", "models", "--ledger", "ledger.csv"]
                seconds, peak = _timed(command, folder, env)
                print(f"{'zooserve export ' + name + '.keras':<40} {run:>3} {seconds:>7.2f} "
                      f"{peak:>13.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

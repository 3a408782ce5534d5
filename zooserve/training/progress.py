"""What `zooserve train` shows while a model fits, unless `--verbose`: one progress line per
fit instead of Keras's line per epoch (150 of them for penguins)."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

import keras


class EpochProgress(keras.callbacks.Callback):
    """Epoch n/N, the loss and a validation metric: one line rewritten in place (`\\r`) on a
    terminal; in a log (not a terminal), a line at each quarter of the epochs and one at the
    end, so at most four."""

    def __init__(
        self, label: str, epochs: int, validation_metric: str, stream: TextIO | None = None
    ) -> None:
        super().__init__()
        self.label = label
        self.epochs = epochs
        self.validation_metric = validation_metric
        self.stream = stream or sys.stdout
        self.in_place = self.stream.isatty()
        self.quarters = {math.ceil(self.epochs * q / 4) for q in (1, 2, 3)}
        self.started = time.perf_counter()
        self.last_line = ""
        self.last_shown = 0
        self.epochs_done = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs_done = epoch + 1
        self.last_line = self._line(logs or {})
        if self.in_place:
            self.stream.write("\r" + self.last_line + "\033[K")  # clear a longer old line
            self.stream.flush()
        elif self.epochs_done in self.quarters:
            self._show_line()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.epochs_done < self.epochs:
            self.last_line += "  (early stop: best weights kept)"
        if self.in_place:
            self.stream.write("\r" + self.last_line + "\033[K\n")
            self.stream.flush()
        elif self.last_shown != self.epochs_done or self.epochs_done < self.epochs:
            self._show_line()

    def _show_line(self) -> None:
        print(self.last_line, file=self.stream, flush=True)
        self.last_shown = self.epochs_done

    def _line(self, logs: dict) -> str:
        parts = [f"{self.label}: epoch {self.epochs_done}/{self.epochs}"]
        for key in ("loss", self.validation_metric):
            if key in logs:
                parts.append(f"{key} {float(logs[key]):.4f}")
        parts.append(f"{time.perf_counter() - self.started:.0f} s")
        return "  ".join(parts)


def quiet_library_logs() -> None:
    """TensorFlow's, absl's and tf2onnx's Python loggers to errors only (their C++ side is
    quieted by TF_CPP_MIN_LOG_LEVEL, which must be set before TensorFlow is imported)."""
    import logging

    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)
    for name in ("tensorflow", "tf2onnx"):
        logging.getLogger(name).setLevel(logging.ERROR)

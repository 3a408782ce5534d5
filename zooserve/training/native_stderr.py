"""TensorFlow imported as quietly as TF_CPP_MIN_LOG_LEVEL asks, on every CPU.

TensorFlow's C++ side reads TF_CPP_MIN_LOG_LEVEL, yet on CPUs with AVX-512 its import still
writes absl's "before absl::InitializeLog()" notice and oneDNN's `port.cc` line (twice each)
straight to file descriptor 2, where Python cannot catch them. So the import runs with fd 2
pointed at a temporary file; afterwards every line that is not a C++ log line below the level
(or that notice, a warning) is written to the real stderr, in order. Numerics are untouched:
oneDNN stays on, only its message is filtered."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

LEVEL_VARIABLE = "TF_CPP_MIN_LOG_LEVEL"

# absl's log prefix: severity, MMDD, time (or seconds since the epoch before absl is set up),
# thread id, file:line]. As in `I0000 00:00:1796665352.623579    3224 port.cc:153] oneDNN ...`
_LOG_LINE = re.compile(rb"^([IWEF])\d{4} [\d:.]+ +\d+ [^\s\]]+:\d+\] ")
_SEVERITY = {b"I": 0, b"W": 1, b"E": 2, b"F": 3}
_ABSL_NOTICE = (b"WARNING: All log messages before absl::InitializeLog() is called are written "
                b"to STDERR")


def min_log_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it: 0 (everything) when unset or not a number."""
    try:
        return int(os.environ.get(LEVEL_VARIABLE, "0"))
    except ValueError:
        return 0


def below_level(line: bytes, level: int) -> bool:
    """Whether `line` is a C++ log line (or absl's set-up notice, a warning) that `level`
    hides: 1 hides INFO, 2 WARNING too, 3 ERROR too. FATAL and any other line are kept."""
    if line.rstrip(b"\r\n") == _ABSL_NOTICE:
        return level >= 1
    found = _LOG_LINE.match(line)
    return found is not None and _SEVERITY[found.group(1)] < level


@contextlib.contextmanager
def native_stderr_filtered(level: int) -> Iterator[None]:
    """Inside, whatever anything in the process writes to fd 2 (C++ and Python alike) is
    held; on leaving, the lines `below_level` drops are gone and the rest reach stderr."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to protect
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = b"".join(line for line in held if not below_level(line, level))
            while kept:
                kept = kept[os.write(2, kept):]


def import_tensorflow() -> None:
    """Import TensorFlow and Keras (TensorFlow's C++ set-up runs then) with fd 2 filtered at
    the level in TF_CPP_MIN_LOG_LEVEL. Set the level before: TensorFlow reads it once."""
    with native_stderr_filtered(min_log_level()):
        import keras  # noqa: F401
        import tensorflow  # noqa: F401

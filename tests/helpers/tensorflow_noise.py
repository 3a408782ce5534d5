"""TensorFlow's AVX-512 start-up lines on any CPU, for the tests of quiet commands.

On CPUs with AVX-512, importing TensorFlow writes absl's notice and oneDNN's line to file
descriptor 2 whatever TF_CPP_MIN_LOG_LEVEL says; elsewhere it writes nothing. So that a test
of "no noise" fails wherever the noise leaks, `noisy_tensorflow_env` gives a subprocess a
`sitecustomize` that writes those lines (and a warning and an error line of the same form)
to fd 2, as the C++ side does, while `tensorflow` is being imported."""

from __future__ import annotations

import os
from pathlib import Path

START_UP_LINES = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796665352.623579    3224 port.cc:153] oneDNN custom operations are on. You "
    "may see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "W0000 00:00:1796665352.700000    3224 cpu_feature_guard.cc:227] a warning of the C++ side",
    "E0000 00:00:1796665352.800000    3224 cuda_executor.cc:1228] an error of the C++ side",
]

_SITECUSTOMIZE = '''
import importlib.abc
import os
import sys

LINES = {lines!r}


class StartUpNoise(importlib.abc.MetaPathFinder):
    # tensorflow.python is looked for only while tensorflow's __init__ runs; a look for
    # tensorflow itself (importlib.util.find_spec) imports nothing.
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow.python":
            sys.meta_path.remove(self)
            os.write(2, "".join(line + "\\n" for line in LINES).encode())
        return None


sys.meta_path.insert(0, StartUpNoise())
'''


def noisy_tensorflow_env(folder: Path, base: dict | None = None) -> dict:
    """An environment (`base`, else this process's) in which importing tensorflow first writes
    START_UP_LINES to fd 2. The sitecustomize goes into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(_SITECUSTOMIZE.format(lines=START_UP_LINES))
    env = dict(os.environ if base is None else base)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))
    return env

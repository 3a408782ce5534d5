"""zooserve/serving/memory.py: large buffers are kept on mmap (glibc), unless the environment
already chose a threshold. Run in fresh interpreters, since mallopt changes the process for good."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT

CALL = ("from zooserve.serving.memory import return_large_buffers_to_the_system as f; "
        "print(f())")


def _call(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", CALL], cwd=ROOT, capture_output=True,
                          text=True, env=env, timeout=60, check=True)
    return done.stdout.strip()


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_the_threshold_is_pinned_on_glibc():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    assert _call(env) == "True"


def test_an_operator_choice_in_the_environment_wins():
    assert _call({**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576"}) == "False"

"""The `zooserve` command as a user runs it: `python -m zooserve ...` in its own process."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.helpers.paths import ROOT


def zooserve(*args: str, env: dict | None = None, timeout: float = 60):
    return subprocess.run(
        [sys.executable, "-m", "zooserve", *args], capture_output=True, text=True, cwd=ROOT,
        env={**os.environ, **(env or {})}, timeout=timeout,
    )

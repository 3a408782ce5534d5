"""Where the tests find the repository and its shipped models."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"
DEPLOY = ROOT / "deploy"

# The local stand-in for python:3.11-slim-bookworm that scripts/image-base builds.
STAND_IN_BASE = os.environ.get("ZOOSERVE_STAND_IN_BASE", "zooserve-stand-in/python:3.11-bookworm")

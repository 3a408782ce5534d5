"""What someone who can write to a repository does to a version: swap its model file and
rewrite its card to vouch for the new one, so that the card's sha256s alone cannot tell."""

from __future__ import annotations

import shutil
from pathlib import Path

from zooserve.repository.layout import (
    MODEL_FILE,
    read_card,
    record_files,
    sha256_of_file,
    write_card,
)


def swap_model_and_card(version: Path, model_file: Path) -> None:
    """Put `model_file` in the version's place and make its card record it (FILES_KEY and
    `onnx.sha256` alike)."""
    shutil.copy(model_file, version / MODEL_FILE)
    card = read_card(version)
    card.setdefault("onnx", {})["sha256"] = sha256_of_file(version / MODEL_FILE)
    write_card(version, card)
    record_files(version)

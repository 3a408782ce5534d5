"""Where a trained model came from: the code's commit, the libraries, the time."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

LIBRARIES = ["tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy"]


def git_commit(where: Path | None = None) -> str:
    """HEAD's commit, with `-dirty` when zooserve/training/ has uncommitted changes; `unknown`
    if no git."""
    where = where or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--", "."],
            cwd=where, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if status else head


def library_versions() -> dict[str, str]:
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name.removesuffix("-cpu")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name.removesuffix("-cpu")] = "not installed"
    return versions


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def card_fields() -> dict[str, object]:
    """What every card says of where it was made: libraries, commit, time."""
    return {"libraries": library_versions(), "git_commit": git_commit(), "created": utc_now()}

"""Small spectrum library files (MGF plus a JSON similarity matrix) for the training tests."""

from __future__ import annotations

import json
from pathlib import Path


def write_mgf_library(folder: Path, count: int) -> Path:
    """`lib.mgf` with `count` small spectra s0.. and `lib.json` with their Tanimoto matrix
    (1 on the diagonal, 0.3 elsewhere); returns the MGF path."""
    blocks = []
    for i in range(count):
        peaks = "\n".join(f"{100 + 10 * k + i:.1f} {1000 * (k + 1)}" for k in range(5))
        blocks.append(f"BEGIN IONS\nTITLE=s{i}\nPEPMASS=300.1\nCHARGE=1+\n{peaks}\nEND IONS\n")
    (folder / "lib.mgf").write_text("\n".join(blocks))
    ids = [f"s{i}" for i in range(count)]
    scores = [[1.0 if i == j else 0.3 for j in range(count)] for i in range(count)]
    (folder / "lib.json").write_text(json.dumps({"ids": ids, "scores": scores}))
    return folder / "lib.mgf"

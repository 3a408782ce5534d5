"""The peers' own virtual environments, made on first use under
~/.cache/zooserve/benchmarks/venvs/<peer> and never inside the project's .venv.

Each peer pins its server and the same ONNX Runtime and numpy as the project's venv, so the
model runs the same code everywhere; protobuf stays below 7, which the peers' generated code
needs. A venv counts as made when its marker file holds the exact pin list it was made from."""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path.home() / ".cache" / "zooserve" / "benchmarks"
VENVS = CACHE / "venvs"
COMMON = ["onnxruntime==1.32.0", "protobuf<7"]

PINS: dict[str, list[str]] = {
    "triton": ["nvidia-pytriton==0.7.0", *COMMON],
    "kserve": ["kserve==0.21.0", *COMMON],
    "mlserver": ["mlserver==1.7.1", "uvloop<0.22", *COMMON],
}


def _marker(peer: str) -> str:
    return hashlib.sha256("\n".join(PINS[peer]).encode()).hexdigest()


def python_of(peer: str) -> Path:
    return VENVS / peer / "bin" / "python"


def is_ready(peer: str) -> bool:
    marker = VENVS / peer / ".zooserve-pins"
    return marker.is_file() and marker.read_text().strip() == _marker(peer)


def ensure(peer: str, log=print) -> Path:
    """The peer's interpreter, making its venv first when it is missing or out of date."""
    if is_ready(peer):
        return python_of(peer)
    venv = VENVS / peer
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    base = shutil.which("python3.11") or sys.executable
    log(f"making the {peer} venv at {venv} (first use; a few minutes)")
    subprocess.run([base, "-m", "venv", str(venv)], check=True)
    pip = [str(python_of(peer)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)
    subprocess.run([*pip, *PINS[peer]], check=True)
    (venv / ".zooserve-pins").write_text(_marker(peer) + "\n")
    return python_of(peer)


def installed_versions(peer: str, names: list[str]) -> dict[str, str]:
    """name -> version as the peer's venv reports it (importlib.metadata, no import)."""
    code = ("import sys, importlib.metadata as m\n"
            "for n in sys.argv[1:]:\n"
            "    try: print(n, m.version(n))\n"
            "    except m.PackageNotFoundError: print(n, '-')\n")
    out = subprocess.run([str(python_of(peer)), "-c", code, *names], capture_output=True,
                         text=True, check=True).stdout
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def main() -> None:
    parser = argparse.ArgumentParser(description="make the peers' venvs now")
    parser.add_argument("peers", nargs="*", default=sorted(PINS))
    for peer in parser.parse_args().peers:
        print(peer, ensure(peer))


if __name__ == "__main__":
    main()

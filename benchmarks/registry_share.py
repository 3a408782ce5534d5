"""How big a shared version is and how long `zooserve push` and `zooserve pull` take on
loopback: figures, never assertions.

    .venv/bin/python -m benchmarks.registry_share [--runs 5] [--models penguins digits ...]

Starts Debian's `docker-registry` on a free loopback port with TLS and a password (the test
suite's registry, tests/helpers/registry.py), then for each model runs, as a user would (a
`zooserve` process each time):

  push       to a repository the registry has never seen, so every blob is sent;
  push again the same version to another tag: every blob is already there, only the manifest;
  pull       into an empty repository, every digest checked, published as version 1.

Prints the artifact's size (its files and its manifest) and the median wall time of each
step with its range over the runs. Most of a short step is starting Python; the time inside
the command, which it prints itself, is given beside it."""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.helpers.registry import run_registry

ROOT = Path(__file__).resolve().parent.parent
INSIDE = re.compile(r"in ([0-9.]+) s$")


def _run(args: list[str], env: dict) -> tuple[float, float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "zooserve", *args], capture_output=True,
                          text=True, env=env, cwd=ROOT)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: {done.stderr.strip()}")
    line = done.stdout.strip().splitlines()[-1]
    return wall, float(INSIDE.search(line).group(1)), line


def _figure(values: list[float]) -> str:
    return (f"{statistics.median(values) * 1000:.0f} ms "
            f"({min(values) * 1000:.0f}-{max(values) * 1000:.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["penguins", "digits", "spectra_search"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch, run_registry(Path(scratch) / "r") as registry:
        env = {**os.environ, "DOCKER_CONFIG": str(registry.docker_config())}
        flags = ["--tls-ca", str(registry.pki.ca), "--models", str(ROOT / "models")]
        print(f"registry: docker-registry (distribution 2.8) on {registry.host}, TLS, htpasswd; "
              f"{args.runs} runs each")
        print("| model | files | artifact | push (new) | push (again) | pull |")
        print("|---|---:|---:|---:|---:|---:|")
        for model in args.models:
            steps: dict[str, list[tuple[float, float]]] = {"push": [], "again": [], "pull": []}
            pushed = ""
            for run in range(args.runs):
                reference = f"{registry.host}/bench/{model.replace('_', '-')}-{run}"
                wall, inside, pushed = _run(["push", model, f"{reference}:1", *flags], env)
                steps["push"].append((wall, inside))
                steps["again"].append(_run(["push", model, f"{reference}:again", *flags],
                                           env)[:2])
                target = Path(scratch) / f"pulled-{model}-{run}"
                wall, inside, _ = _run(["pull", f"{reference}:1", "--tls-ca",
                                           str(registry.pki.ca), "--models", str(target)], env)
                steps["pull"].append((wall, inside))
            # What the artifact carries (a library: its embedding model's files too).
            files, size = re.search(r": (\d+) files, ([0-9.]+ [kMG]?B)", pushed).groups()
            cells = [f"{_figure([w for w, _ in steps[s]])}, inside "
                     f"{_figure([i for _, i in steps[s]])}" for s in ("push", "again", "pull")]
            print(f"| {model} | {files} | {size} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

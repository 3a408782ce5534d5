"""MLServer 1.7.1 serving the benchmark models with the ONNX Runtime runtime beside this file
(mlserver_runtime.OnnxRuntime). Writes MLServer's settings.json and one model-settings.json
per model into a fresh folder, then runs `mlserver start` on it; everything else stays at
MLServer's defaults (parallel inference workers included) except debug logging, which is off.

Runs in its own venv (benchmarks/peers/venvs.py):

    <mlserver venv>/bin/python benchmarks/peers/mlserver_server.py --models models \
        --grpc-port 18081 --http-port 18080 --metrics-port 18082
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

NAMES = ("penguins", "digits")
HERE = Path(__file__).resolve().parent


def write_settings(folder: Path, models: Path, grpc_port: int, http_port: int,
                   metrics_port: int) -> None:
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "grpc_port": grpc_port, "http_port": http_port,
        "metrics_port": metrics_port, "debug": False, "model_repository_root": str(folder),
    }))
    for name in NAMES:
        (folder / name).mkdir()
        (folder / name / "model-settings.json").write_text(json.dumps({
            "name": name, "implementation": "mlserver_runtime.OnnxRuntime",
            "parameters": {"uri": str((models / name / "1" / "model.onnx").resolve()),
                           "version": "1"},
        }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="mlserver-bench-"))
    write_settings(folder, args.models, args.grpc_port, args.http_port, args.metrics_port)
    # the runtime module must import in MLServer's worker processes too
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), os.environ.get("PYTHONPATH", "")) if p)
    mlserver = Path(sys.executable).with_name("mlserver")
    os.execv(str(mlserver), [str(mlserver), "start", str(folder)])


if __name__ == "__main__":
    main()

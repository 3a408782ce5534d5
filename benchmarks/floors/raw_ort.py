"""The floor under every server: ONNX Runtime in-process, no server, no protocol.

For each model: batch 1, one request after another on a one-thread session (latency and
rows/s), and batch 32 back to back for throughput (rows/s, images/s for the CNN) with one
intra-op thread and with one per core. Prints one JSON object.

    .venv/bin/python -m benchmarks.floors.raw_ort --duration 2 penguins digits
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from benchmarks.payloads import LOADS

ROOT = Path(__file__).resolve().parent.parent.parent


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if threads == 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_for(sess: ort.InferenceSession, feed: dict, duration_s: float) -> list[float]:
    for _ in range(20):  # warm-up
        sess.run(None, feed)
    times: list[float] = []
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end:
        started = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - started)
    return times


def measure(model: str, duration_s: float, cores: int) -> dict:
    load = LOADS[model]
    path = ROOT / "models" / model / "1" / "model.onnx"
    out: dict = {}
    one = session(path, 1)
    lat = np.asarray(run_for(one, {load.input_name: load.batch(1)}, duration_s)) * 1000
    out["b1"] = {"throughput": len(lat) / (lat.sum() / 1000), "p50_ms": float(np.median(lat)),
                 "p99_ms": float(np.percentile(lat, 99)), "threads": 1}
    for threads in sorted({1, cores}):
        sess = one if threads == 1 else session(path, threads)
        times = np.asarray(run_for(sess, {load.input_name: load.batch(32)}, duration_s))
        out[f"b32_t{threads}"] = {"throughput": 32 * len(times) / times.sum(),
                                  "p50_ms": float(np.median(times) * 1000), "threads": threads}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(json.dumps({"cores": cores, "onnxruntime": ort.__version__,
                      "models": {m: measure(m, args.duration, cores) for m in args.names}}))


if __name__ == "__main__":
    main()

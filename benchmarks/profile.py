"""Where a zooserve process spends its time under load: py-spy samples the thread holding
the GIL while the benchmarks' load generator drives one model at one concurrency, and the
samples are summed per function (inclusive), Python and, with --native, C frames.

    /tmp/spy/bin/pip install py-spy      # once, in a venv of its own (not a project dependency)
    .venv/bin/python -m benchmarks.profile penguins 8 --py-spy /tmp/spy/bin/py-spy [--native]

Figures, never assertions. Prints the load point, the model's batch sizes and statistics
(from ModelStatistics), and the functions that held the GIL most."""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from benchmarks import loadgen, payloads
from benchmarks.systems import free_port
from zooserve.protocol.generated import grpc_service_pb2 as pb
from zooserve.protocol.generated import grpc_service_pb2_grpc as pb_grpc

ROOT = Path(__file__).resolve().parent.parent


def frame_key(frame: str) -> str:
    """`function (file.py:line)` as `function (file.py)`: one row per function."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else name


def summarise(raw: Path, top: int) -> list[str]:
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples = int(count)
        total += samples
        for key in {frame_key(f) for f in stack.split(";")}:
            inclusive[key] += samples
    rows = [f"{total} samples of the GIL holder; inclusive share per function:"]
    rows += [f"{100 * n / total:5.1f}%  {key}" for key, n in inclusive.most_common(top)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=list(payloads.MODELS))
    parser.add_argument("concurrency", type=int)
    parser.add_argument("--py-spy", default="py-spy", help="the py-spy binary")
    parser.add_argument("--native", action="store_true", help="C frames too (gRPC's core)")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()

    port = free_port()
    server = subprocess.Popen(
        [str(ROOT / ".venv/bin/zooserve"), "serve", "--models", str(ROOT / "models"),
         "--grpc-port", str(port), "--http-port", "0", "--metrics-port", "0",
         "--log-level", "WARNING"], cwd=ROOT)
    raw = Path(tempfile.mkdtemp()) / "samples.txt"
    try:
        time.sleep(4)
        spy = subprocess.Popen(
            [args.py_spy, "record", "--gil", "-r", "100", "-f", "raw", "-o", str(raw),
             "-d", str(int(args.seconds)), "-p", str(server.pid),
             *(["--native"] if args.native else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        point = loadgen.grpc_unary(f"127.0.0.1:{port}", payloads.infer_request_bytes(args.model),
                                   args.concurrency, args.seconds + 1, 1, server.pid)
        spy.wait()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stats = pb_grpc.GRPCInferenceServiceStub(channel).ModelStatistics(
                pb.ModelStatisticsRequest(name=args.model)).model_stats[0]
    finally:
        server.terminate()
        server.wait()
    print(f"{args.model} c={args.concurrency}: {point.throughput:,.0f}/s, "
          f"p50 {point.p50_ms:.2f} ms, server CPU {point.server_cpu_ms:.3f} ms/request")
    print("batch sizes (runs):", {b.batch_size: b.compute_infer.count for b in stats.batch_stats})
    s = stats.inference_stats
    print("per request, µs:", {part: round(getattr(s, part).ns / max(1, s.success.count) / 1000)
                               for part in ("queue", "compute_input", "compute_infer",
                                            "compute_output")})
    if raw.exists():
        print("\n".join(summarise(raw, args.top)))
    else:
        sys.exit("py-spy wrote nothing: is it installed (--py-spy) and allowed to ptrace?")


if __name__ == "__main__":
    main()

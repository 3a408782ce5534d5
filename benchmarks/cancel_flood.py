"""Memory after a flood of started-and-cancelled gRPC calls: figures, never assertions.

    .venv/bin/python -m benchmarks.cancel_flood [--calls 84000] [--wave 500] [--idle 12]

Starts one `zooserve serve` on the shipped zoo (as the benchmark harness starts it), and
prints its RSS: idle before, at the end of the flood, and every second of the idle time
after it. The flood is `--calls` ModelInfer calls (one penguins row each) on grpc.aio
channels, `--wave` at a time: each wave's calls are started, given a moment to reach the
server, then cancelled by the client, as a hostile client that opens calls and drops them
does. How the calls ended (CANCELLED, or answered before the cancel came) is printed too.
`--held` gives penguins a serving.json under which each call waits in the model's queue,
so that every cancel lands while its request is in the server."""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import shutil
import tempfile
import time
from pathlib import Path

import grpc
import numpy as np
import psutil

from benchmarks import systems
from benchmarks.loadgen import INFER
from zooserve.protocol.generated import grpc_service_pb2 as service_pb2


def _mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"


def penguins_request() -> bytes:
    message = service_pb2.ModelInferRequest(model_name="penguins")
    message.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    message.raw_input_contents.append(np.full((1, 4), 40, "<f4").tobytes())
    return message.SerializeToString()


async def flood(url: str, payload: bytes, calls: int, wave: int, channels: int = 8,
                pause_s: float = 0.002) -> collections.Counter:
    """`calls` ModelInfer calls, `wave` at a time, each cancelled `pause_s` after its wave
    started: how they ended, by status name."""
    opened = [grpc.aio.insecure_channel(url) for _ in range(channels)]
    stubs = [channel.unary_unary(INFER) for channel in opened]
    ended: collections.Counter = collections.Counter()
    try:
        for start in range(0, calls, wave):
            started = [stubs[i % channels](payload, timeout=30)
                       for i in range(start, min(calls, start + wave))]
            await asyncio.sleep(pause_s)  # the calls go out; the server takes them up
            for call in started:
                call.cancel()
            for call in started:
                try:
                    await call
                    ended["OK"] += 1
                except asyncio.CancelledError:
                    ended["CANCELLED"] += 1
                except grpc.aio.AioRpcError as exc:
                    ended[exc.code().name] += 1
    finally:
        for channel in opened:
            await channel.close()
    return ended


def held_models(into: Path) -> Path:
    """A copy of the zoo where a lone penguins request waits 5 s for company."""
    models = into / "models"
    shutil.copytree(systems.MODELS, models)
    (models / "penguins" / "serving.json").write_text(json.dumps({"dynamic_batching": {
        "max_queue_delay_us": 5_000_000, "preferred_batch_sizes": [4096]}}))
    return models


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=84_000)
    parser.add_argument("--wave", type=int, default=500)
    parser.add_argument("--idle", type=float, default=12.0, help="seconds of idle to watch")
    parser.add_argument("--held", action="store_true",
                        help="hold each call in penguins' queue so every cancel lands in it")
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="zooserve-cancel-"))
    if args.held:
        systems.MODELS = held_models(logs)  # _start_zooserve serves systems.MODELS
    running = systems.SYSTEMS["zooserve"].start(logs)
    try:
        process = psutil.Process(running.pid)
        before = process.memory_info().rss
        print(f"zooserve serve: idle RSS {_mib(before)}")
        started = time.perf_counter()
        ended = asyncio.run(flood(running.grpc_target, penguins_request(), args.calls,
                                  args.wave))
        took = time.perf_counter() - started
        after = process.memory_info().rss
        print(f"{args.calls:,} calls started and cancelled, {args.wave} at a time, in "
              f"{took:.1f} s: {dict(ended)}; RSS at the end {_mib(after)} "
              f"({after / before:.2f} x before)")
        idle_started = time.monotonic()
        samples = []
        while (elapsed := time.monotonic() - idle_started) < args.idle:
            time.sleep(1.0 - elapsed % 1.0)
            rss = process.memory_info().rss
            samples.append((time.monotonic() - idle_started, rss))
        print("idle: " + ", ".join(f"{t:.0f} s {_mib(rss)}" for t, rss in samples))
        back = next((t for t, rss in samples if rss <= before * 1.2), None)
        print(f"after {samples[-1][0]:.0f} s idle: {_mib(samples[-1][1])} "
              f"({samples[-1][1] / before:.2f} x before); within 20% of before "
              + (f"after {back:.0f} s" if back is not None else "not within the idle time"))
    finally:
        systems.stop(running)


if __name__ == "__main__":
    main()

"""Memory comes back after a flood of started-and-cancelled gRPC calls: a real `zooserve
serve` takes 15,000 ModelInfer calls that its client cancels a moment after starting them
(`benchmarks/cancel_flood.py`, which prints the figures for 84,000), then sits idle. Its RSS
must come back within 20% (and a few MiB) of what it was before the flood, and before a
deadline: malloc's heaps keep the pieces gRPC's core freed until `zooserve.serving.memory`'s idle
trimmer hands them back (without it, 15,000 cancels left 55 MiB more than before, still
there at the deadline)."""

from __future__ import annotations

import asyncio
import time

import grpc
import psutil

from benchmarks.cancel_flood import flood, penguins_request
from tests.helpers.paths import MODELS
from tests.helpers.server import run_server

CALLS = 15_000
WAVE = 500
BACK_WITHIN = 1.2  # of the RSS before the flood
SLACK_BYTES = 16 * 2**20
DEADLINE_S = 15.0  # after the flood; the trimmer acts after a quiet second


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f} MiB"


def test_memory_comes_back_after_a_cancel_flood(tmp_path):
    payload = penguins_request()
    with run_server(MODELS, tmp_path) as server:
        process = psutil.Process(server.process.pid)
        # Answered calls first, so that what gRPC allocates once is in the figure before.
        with grpc.insecure_channel(server.url) as channel:
            infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
            for _ in range(200):
                infer(payload, timeout=10)
        before = process.memory_info().rss
        ended = asyncio.run(flood(server.url, payload, CALLS, WAVE))
        flooded = process.memory_info().rss
        assert sum(ended.values()) == CALLS and ended["CANCELLED"] > CALLS // 2, ended

        bound = before * BACK_WITHIN + SLACK_BYTES
        idle_since = time.monotonic()
        rss = flooded
        while rss > bound and time.monotonic() - idle_since < DEADLINE_S:
            time.sleep(0.1)
            rss = process.memory_info().rss
        waited = time.monotonic() - idle_since
        print(f"\n{CALLS:,} cancelled calls: RSS {_mib(before)} before, {_mib(flooded)} "
              f"after the flood, {_mib(rss)} {waited:.1f} s later (bound {_mib(bound)})")
        assert rss <= bound, (
            f"RSS {_mib(rss)} {DEADLINE_S:g} s after the flood, above {_mib(bound)} "
            f"({BACK_WITHIN:g} x {_mib(before)} before, plus {_mib(SLACK_BYTES)})")
        assert process.is_running() and server.process.poll() is None

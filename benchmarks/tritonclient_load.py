"""The same closed-loop load, sent by tritonclient.grpc.aio (the client others wrote) instead of
pre-serialised bytes: each request builds its InferInput from numpy as a user's code would.

Runs as its own process, so its CPU is not the harness's; this module never imports
`service`.
Prints one JSON object (the loadgen Point).

    .venv/bin/python -m benchmarks.tritonclient_load --target 127.0.0.1:8001 --model penguins \
        --concurrency 8 --duration 3 [--server-pid PID]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from benchmarks import loadgen
from benchmarks.payloads import LOADS


async def _run(target: str, model: str, concurrency: int, window: loadgen._Window):
    import tritonclient.grpc.aio as grpcclient
    from tritonclient.utils import InferenceServerException

    load = LOADS[model]
    array = load.batch(1)
    client = grpcclient.InferenceServerClient(target)
    try:
        async def worker(w: loadgen._Window) -> None:
            while w.running():
                started = time.perf_counter_ns()
                tensor = grpcclient.InferInput(load.input_name, list(array.shape), "FP32")
                tensor.set_data_from_numpy(array)
                try:
                    result = await client.infer(model, [tensor])
                    result.as_numpy(load.output_name)
                except InferenceServerException as exc:
                    w.record(started, str(exc))
                else:
                    w.record(started)

        return await loadgen._drive(window, concurrency, worker)
    finally:
        await client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--model", required=True, choices=sorted(LOADS))
    parser.add_argument("--concurrency", type=int, required=True)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--server-pid", type=int)
    args = parser.parse_args()
    window = loadgen._Window(args.server_pid, args.warmup, args.duration)
    point = asyncio.run(_run(args.target, args.model, args.concurrency, window))
    print(json.dumps(point.as_dict()))


if __name__ == "__main__":
    main()

"""Memory and admission under overload: figures, never assertions.

    .venv/bin/python -m benchmarks.memory [--inflight 2000] [--bursts 3]

Starts one `zooserve serve` on the shipped zoo and prints, with the server's RSS:

1. idle, after start;
2. after bursts of max-size batches (digits, 1024 images per request, 4 at once): the
   ONNX Runtime arena's peak, and what is left once they are answered;
3. 2,000 penguins requests in flight at once (one row each), and 2,000 digits requests of
   128 images: how many were answered OK, how many refused RESOURCE_EXHAUSTED (and by
   which limit), any other status, the p99 latency of the answered ones, and the peak RSS;
4. one 37 MB KServe v2 JSON body (digits, one element too many, so it is refused with 400
   after it is parsed): the peak while it is read and parsed, and what is left;
5. for comparison, ONNX Runtime alone in this process: RSS after batch-1024 digits runs with
   the arena as it is by default and with the shrinkage zooserve asks for on large runs.

The server is started as the benchmark harness starts it (`systems.SYSTEMS["zooserve"]`).
Requests are pre-serialised ModelInferRequest bytes on grpc.aio channels, spread over 8
channels."""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import psutil

from benchmarks import systems
from benchmarks.loadgen import INFER
from benchmarks.systems import MODELS
from zooserve.protocol.generated import grpc_service_pb2 as service_pb2

MESSAGE_BYTES = 64 * 1024 * 1024


def _request(model: str, name: str, array: np.ndarray) -> bytes:
    message = service_pb2.ModelInferRequest(model_name=model)
    message.inputs.add(name=name, datatype="FP32", shape=list(array.shape))
    message.raw_input_contents.append(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return message.SerializeToString()


class PeakSampler:
    """The peak RSS of a process, sampled every 20 ms on a thread."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.02)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


async def _flood(url: str, payload: bytes, count: int, timeout: float) -> dict:
    channels = [grpc.aio.insecure_channel(url, options=[
        ("grpc.max_send_message_length", MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MESSAGE_BYTES)]) for _ in range(8)]
    statuses: collections.Counter = collections.Counter()
    messages: dict[str, str] = {}
    latencies: list[float] = []

    async def one(index: int) -> None:
        call = channels[index % len(channels)].unary_unary(INFER)
        start = time.perf_counter()
        try:
            await call(payload, timeout=timeout)
            latencies.append(time.perf_counter() - start)
            statuses["OK"] += 1
        except grpc.aio.AioRpcError as exc:
            statuses[exc.code().name] += 1
            messages.setdefault(exc.code().name, exc.details() or "")

    await asyncio.gather(*(one(i) for i in range(count)))
    for channel in channels:
        await channel.close()
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] if latencies else float("nan")
    return {"statuses": dict(statuses), "messages": messages, "p99_s": p99}


def _mib(value: int) -> str:
    return f"{value / 2**20:,.0f} MiB"


def _raw_ort_arena(bursts: int) -> list[tuple[str, int, int]]:
    import onnxruntime as ort

    rows = []
    images = np.random.default_rng(0).random((1024, 28, 28, 1), dtype=np.float32)
    me = psutil.Process()
    for mode in ("default arena", "arena shrinkage after each run"):
        session = ort.InferenceSession(str(MODELS / "digits" / "1" / "model.onnx"),
                                       providers=["CPUExecutionProvider"])
        options = None
        if mode.startswith("arena shrinkage"):
            options = ort.RunOptions()
            options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        before = me.memory_info().rss
        for _ in range(bursts):
            session.run(None, {session.get_inputs()[0].name: images}, options)
        rows.append((mode, before, me.memory_info().rss))
        del session
    return rows


def _json_body(process: psutil.Process, http_url: str, rows: int = 4120) -> None:
    import httpx

    values = np.random.default_rng(2).uniform(0, 255, rows * 784 + 1).round(6).tolist()
    body = json.dumps({"inputs": [{"name": "image", "datatype": "FP32",
                                   "shape": [rows, 28, 28, 1], "data": values}]}).encode()
    before = process.memory_info().rss
    with PeakSampler(process) as sampler:
        answer = httpx.post(f"{http_url}/v2/models/digits/infer",
                            content=body, headers={"Content-Type": "application/json"},
                            timeout=120)
    time.sleep(0.5)
    print(f"one {len(body) / 1e6:.1f} MB JSON body, answered {answer.status_code}: RSS "
          f"{_mib(before)} before, peak {_mib(sampler.peak)}, after "
          f"{_mib(process.memory_info().rss)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inflight", type=int, default=2000)
    parser.add_argument("--bursts", type=int, default=3)
    args = parser.parse_args()

    # Started as the benchmark harness starts it: ready once every model answers.
    logs = Path(tempfile.mkdtemp(prefix="zooserve-memory-"))
    running = systems.SYSTEMS["zooserve"].start(logs)
    url = running.grpc_target
    try:
        process = psutil.Process(running.pid)
        print(f"zooserve serve, zoo of {MODELS}: idle RSS {_mib(process.memory_info().rss)}")

        rng = np.random.default_rng(1)
        batch = _request("digits", "image", rng.random((1024, 28, 28, 1), dtype=np.float32))
        with PeakSampler(process) as sampler:
            for _ in range(args.bursts):
                result = asyncio.run(_flood(url, batch, 4, 120))
        time.sleep(0.5)
        print(f"{args.bursts} bursts of 4 digits batches of 1024: {result['statuses']}; peak RSS "
              f"{_mib(sampler.peak)}, after {_mib(process.memory_info().rss)}")

        for model, name, rows in (("penguins", "features", np.full((1, 4), 40, np.float32)),
                                  ("digits", "image", rng.random((128, 28, 28, 1),
                                                                 dtype=np.float32))):
            payload = _request(model, name, rows)
            with PeakSampler(process) as sampler:
                started = time.perf_counter()
                result = asyncio.run(_flood(url, payload, args.inflight, 300))
                took = time.perf_counter() - started
            time.sleep(0.5)
            print(f"{args.inflight} {model} requests of {rows.shape[0]} rows at once "
                  f"({len(payload) / 1024:,.1f} KiB each), {took:.1f} s: {result['statuses']}, "
                  f"p99 of the answered {result['p99_s'] * 1000:,.0f} ms; peak RSS "
                  f"{_mib(sampler.peak)}, after {_mib(process.memory_info().rss)}")
            for code, message in result["messages"].items():
                print(f"  {code}: {message}")

        _json_body(process, running.http_url)
    finally:
        systems.stop(running)

    print("ONNX Runtime alone, digits batch 1024, "
          f"{args.bursts} runs:")
    for mode, before, after in _raw_ort_arena(args.bursts):
        print(f"  {mode}: RSS {_mib(before)} before, {_mib(after)} after")


if __name__ == "__main__":
    main()

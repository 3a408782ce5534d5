"""The one closed-loop load generator for every gRPC server (and its HTTP twin for the REST row).

N coroutines each send a request, wait for its answer and send the next, for a warm-up and
then a measured window of fixed length. The requests are serialised once beforehand and go
out on a plain grpc.aio channel with identity (de)serializers, so the client spends its CPU on
gRPC itself and not on protobuf or numpy. Per request it records the latency; over the window
it reports throughput, p50, p99, errors, and the CPU the server's whole process tree used per
request (utime + stime from /proc before and after the window), and the client's own."""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from benchmarks import proctree

INFER = "/inference.GRPCInferenceService/ModelInfer"
STREAM_INFER = "/inference.GRPCInferenceService/ModelStreamInfer"


@dataclass
class Point:
    """What one load point measured."""

    requests: int                 # answered within the window
    errors: int
    window_s: float
    throughput: float             # answers per second
    p50_ms: float
    p99_ms: float
    server_cpu_ms: float | None   # server process tree CPU per answered request
    client_cpu_ms: float          # this process's CPU per answered request
    other_cpu_cores: float | None = None  # the rest of the machine's load during the window
    first_error: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class _Window:
    """Start and end of the measured window, with CPU readings at both ends."""

    def __init__(self, server_pid: int | None, warmup_s: float, duration_s: float) -> None:
        self.server_pid = server_pid
        self.warmup_s, self.duration_s = warmup_s, duration_s
        self.latencies: list[int] = []
        self.errors = 0
        self.first_error = ""

    def begin(self) -> None:
        now = time.perf_counter_ns()
        self.start_ns = now + int(self.warmup_s * 1e9)
        self.end_ns = self.start_ns + int(self.duration_s * 1e9)

    def running(self) -> bool:
        return time.perf_counter_ns() < self.end_ns

    def record(self, started: int, error: str = "") -> None:
        finished = time.perf_counter_ns()
        if started < self.start_ns or finished > self.end_ns:
            return  # warm-up, or past the window's end
        if error:
            self.errors += 1
            self.first_error = self.first_error or error
        else:
            self.latencies.append(finished - started)

    async def sample_cpu(self) -> tuple[float | None, float, float | None]:
        """Sleep to the window's start, read CPU; sleep to its end, read again. Also the
        machine's busy time, so that load from outside this benchmark shows."""
        pids = proctree.tree(self.server_pid) if self.server_pid else []
        await asyncio.sleep(max(0.0, (self.start_ns - time.perf_counter_ns()) / 1e9))
        server0, client0 = proctree.cpu_seconds(pids), _own_cpu()
        busy0 = proctree.machine_busy_seconds()
        await asyncio.sleep(max(0.0, (self.end_ns - time.perf_counter_ns()) / 1e9))
        server1, client1 = proctree.cpu_seconds(pids), _own_cpu()
        busy1 = proctree.machine_busy_seconds()
        server = server1 - server0 if pids else None
        other = None
        if server is not None:
            other = max(0.0, (busy1 - busy0) - server - (client1 - client0)) / self.duration_s
        return server, client1 - client0, other

    def point(self, server_cpu: float | None, client_cpu: float,
              other_cores: float | None = None) -> Point:
        n = len(self.latencies)
        lat_ms = np.asarray(self.latencies, dtype=np.float64) / 1e6
        return Point(
            requests=n, errors=self.errors, window_s=self.duration_s,
            throughput=n / self.duration_s,
            p50_ms=float(np.percentile(lat_ms, 50)) if n else float("nan"),
            p99_ms=float(np.percentile(lat_ms, 99)) if n else float("nan"),
            server_cpu_ms=(server_cpu * 1000 / n) if (server_cpu is not None and n) else None,
            client_cpu_ms=client_cpu * 1000 / n if n else float("nan"),
            first_error=self.first_error or ("" if n else "no answer within the window"),
            other_cpu_cores=other_cores)


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _drive(window: _Window, concurrency: int,
                 worker: Callable[[_Window], Awaitable[None]]) -> Point:
    window.begin()
    sampler = asyncio.create_task(window.sample_cpu())
    await asyncio.gather(*(worker(window) for _ in range(concurrency)))
    return window.point(*await sampler)


def _channels(target: str, count: int) -> list:
    """count channels, each on its own TCP connection (a local subchannel pool each, or grpc
    would share one connection among channels with the same arguments)."""
    import grpc

    options = [("grpc.use_local_subchannel_pool", 1)] if count > 1 else []
    return [grpc.aio.insecure_channel(target, options=options) for _ in range(count)]


async def _grpc_unary(target: str, payload: bytes, concurrency: int, window: _Window,
                      connections: int = 1) -> Point:
    import grpc

    channels = _channels(target, connections)
    calls = [channel.unary_unary(INFER) for channel in channels]  # bytes in, bytes out
    turn = iter(range(concurrency))
    try:
        async def worker(w: _Window) -> None:
            call = calls[next(turn) % len(calls)]
            while w.running():
                started = time.perf_counter_ns()
                try:
                    await call(payload, timeout=30)
                except grpc.aio.AioRpcError as exc:
                    w.record(started, f"{exc.code().name}: {exc.details()}")
                else:
                    w.record(started)

        return await _drive(window, concurrency, worker)
    finally:
        for channel in channels:
            await channel.close()


async def _grpc_stream(target: str, payload: bytes, concurrency: int, window: _Window) -> Point:
    """One bidirectional ModelStreamInfer stream per coroutine, one request in flight on each.
    A ModelStreamInferResponse whose first field is error_message (tag 1, bytes 0x0a) is an
    error; an answer starts with infer_response (tag 2)."""
    import grpc

    async with grpc.aio.insecure_channel(target) as channel:
        open_stream = channel.stream_stream(STREAM_INFER)

        async def worker(w: _Window) -> None:
            stream = open_stream(timeout=w.warmup_s + w.duration_s + 60)
            try:
                while w.running():
                    started = time.perf_counter_ns()
                    await stream.write(payload)
                    answer = await stream.read()
                    if answer is grpc.aio.EOF:
                        w.record(started, "stream closed by the server")
                        return
                    w.record(started, _stream_error(answer))
                await stream.done_writing()
            except grpc.aio.AioRpcError as exc:
                w.record(time.perf_counter_ns(), f"{exc.code().name}: {exc.details()}")

        return await _drive(window, concurrency, worker)


def _stream_error(answer: bytes) -> str:
    if answer[:1] == b"\x0a":
        length, pos = 0, 1
        for shift in range(0, 35, 7):  # varint length of error_message
            byte = answer[pos]
            length |= (byte & 0x7F) << shift
            pos += 1
            if not byte & 0x80:
                break
        return answer[pos:pos + length].decode(errors="replace") or "error"
    return ""


async def _http(url: str, body: bytes, concurrency: int, window: _Window) -> Point:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency)
    headers = {"Content-Type": "application/json"}
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker(w: _Window) -> None:
            while w.running():
                started = time.perf_counter_ns()
                try:
                    async with session.post(url, data=body, headers=headers) as response:
                        await response.read()
                        status = response.status
                except aiohttp.ClientError as exc:
                    w.record(started, repr(exc))
                    continue
                w.record(started, "" if status == 200 else f"HTTP {status}")

        return await _drive(window, concurrency, worker)


def grpc_unary(target: str, payload: bytes, concurrency: int, duration_s: float,
               warmup_s: float, server_pid: int | None, connections: int = 1) -> Point:
    """connections > 1 spreads the coroutines over that many TCP connections (for servers
    with several processes on one port, which share out connections, not requests)."""
    window = _Window(server_pid, warmup_s, duration_s)
    return asyncio.run(_grpc_unary(target, payload, concurrency, window, connections))


def grpc_stream(target: str, payload: bytes, concurrency: int, duration_s: float,
                warmup_s: float, server_pid: int | None) -> Point:
    window = _Window(server_pid, warmup_s, duration_s)
    return asyncio.run(_grpc_stream(target, payload, concurrency, window))


def http_post(url: str, body: bytes, concurrency: int, duration_s: float, warmup_s: float,
              server_pid: int | None) -> Point:
    window = _Window(server_pid, warmup_s, duration_s)
    return asyncio.run(_http(url, body, concurrency, window))

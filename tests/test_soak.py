"""A bounded soak against a real server: 64 concurrent clients for 30 s, one request in 20
malformed (a corpus of client mistakes). Every good request must be answered correctly,
every bad one with its client-error status, and the server's memory (RSS, after a warm-up
and at the end) must grow by less than 10%. The figures are printed (`pytest -s`).

Behaviour only, never speed: on a busy machine fewer requests are sent, nothing else
changes."""

from __future__ import annotations

import asyncio
import time

import grpc
import numpy as np
import psutil
import pytest
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.helpers.paths import MODELS
from tests.helpers.penguin_rows import LABELS, one_of_each
from tests.helpers.server import run_server

pytestmark = pytest.mark.slow

CONCURRENCY = 64
SOAK_S = 30.0
WARM_UP_S = 5.0
BAD_EVERY = 20  # 5%
MAX_GROWTH = 0.10


def penguins(features: np.ndarray, **changes) -> pb.ModelInferRequest:
    fields = {"model_name": "penguins", "name": "features", "datatype": "FP32",
              "shape": list(features.shape), "raw": features.astype("<f4").tobytes(),
              **changes}
    request = pb.ModelInferRequest(model_name=fields["model_name"],
                                   model_version=fields.get("version", ""))
    request.inputs.add(name=fields["name"], datatype=fields["datatype"], shape=fields["shape"])
    request.raw_input_contents.append(fields["raw"])
    return request


def bad_requests(features: np.ndarray) -> list[tuple[pb.ModelInferRequest, grpc.StatusCode]]:
    invalid, missing = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    return [
        (penguins(features, model_name="dolphins"), missing),
        (penguins(features, version="²"), missing),
        (penguins(features, model_name="x" * 50_000), missing),
        (penguins(features, name="bill"), invalid),
        (penguins(features, datatype="FP64"), invalid),
        (penguins(features, shape=[1] * 70), invalid),
        (penguins(features, shape=[2**40, 2**40]), invalid),
        (penguins(features, shape=[3, 5]), invalid),
        (penguins(features, raw=b"\0" * 7), invalid),
    ]


@pytest.fixture(scope="module")
def soak_server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("soak")
    with run_server(MODELS, tmp) as running:
        yield running


async def soak(url: str, pid: int) -> dict:
    features, species = one_of_each()
    good = penguins(features)
    bad = bad_requests(features)
    counts = {"sent": 0, "good": 0, "bad": 0, "failed good": 0, "unexpected bad": 0}
    failures: list[str] = []
    server = psutil.Process(pid)
    figures: dict = {}

    async def client(channel: grpc.aio.Channel, offset: int, stop: float) -> None:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        n = offset
        while time.monotonic() < stop:
            n += 1
            counts["sent"] += 1
            if n % BAD_EVERY == 0:
                request, code = bad[(n // BAD_EVERY) % len(bad)]
                counts["bad"] += 1
                try:
                    await stub.ModelInfer(request, timeout=30)
                    got = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as error:
                    got = error.code()
                if got != code:
                    counts["unexpected bad"] += 1
                    failures.append(f"bad request answered {got}, expected {code}")
                continue
            counts["good"] += 1
            try:
                response = await stub.ModelInfer(good, timeout=30)
                probabilities = np.frombuffer(response.raw_output_contents[0], "<f4")
                answer = [LABELS[i] for i in probabilities.reshape(3, 3).argmax(axis=1)]
                if answer != species:
                    raise AssertionError(f"wrong answer {answer}")
            except Exception as exc:  # every failure of a good request is counted
                counts["failed good"] += 1
                failures.append(f"good request failed: {exc!r}"[:300])

    # A few channels, as many clients would open, each carrying its share of the clients.
    channels = [grpc.aio.insecure_channel(url) for _ in range(4)]
    try:
        start = time.monotonic()
        stop = start + SOAK_S
        tasks = [asyncio.ensure_future(client(channels[i % 4], i, stop))
                 for i in range(CONCURRENCY)]
        await asyncio.sleep(WARM_UP_S)
        figures["rss after warm-up"] = server.memory_info().rss
        figures["sent during warm-up"] = counts["sent"]
        await asyncio.gather(*tasks)
        figures["rss at the end"] = server.memory_info().rss
        figures["seconds"] = time.monotonic() - start
    finally:
        for channel in channels:
            await channel.close()
    return {**counts, **figures, "failures": failures[:10]}


def test_soak_loses_no_good_request_and_holds_memory(soak_server):
    result = asyncio.run(soak(soak_server.url, soak_server.process.pid))
    before, after = result["rss after warm-up"], result["rss at the end"]
    growth = (after - before) / before
    print(f"\nsoak: {result['sent']} requests in {result['seconds']:.1f} s at concurrency "
          f"{CONCURRENCY}: {result['good']} good ({result['failed good']} failed), "
          f"{result['bad']} bad ({result['unexpected bad']} answered otherwise than expected); "
          f"server RSS {before / 2**20:.1f} MiB after {WARM_UP_S:.0f} s warm-up, "
          f"{after / 2**20:.1f} MiB at the end ({growth:+.1%})")
    assert result["failed good"] == 0, result["failures"]
    assert result["unexpected bad"] == 0, result["failures"]
    assert result["bad"] >= result["sent"] // BAD_EVERY - CONCURRENCY
    assert result["good"] > 0
    assert growth < MAX_GROWTH, (before, after)

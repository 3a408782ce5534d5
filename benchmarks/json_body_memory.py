"""Memory to accept and to refuse a KServe v2 JSON infer body: figures, never assertions.

    .venv/bin/python -m benchmarks.json_body_memory [--sizes 1,16,60] [--server]

For each body shape and size (MiB), in this process: the body is decoded as the v2 infer
route decodes it (`binary.inference_request` against a one-input FP32 model, with
`--legacy` also the old path: stdlib json on the whole body, then the list decoder), once
well-formed (accepted) and once with a mistake in its last bytes (refused). Printed: wall
seconds and tracemalloc's peak (numpy's arrays included) above the body, per body byte.
`--server` also posts each body to a fresh `zooserve serve` and prints its RSS growth per
body byte (peak sampled every 20 ms, over the RSS before the request)."""

from __future__ import annotations

import argparse
import json
import math
import time
import tracemalloc
from collections.abc import Callable

from zooserve.protocol import codecs
from zooserve.protocol.errors import ServingError, invalid_argument
from zooserve.serving.http_frontend import binary

MiB = 1 << 20


class _Model:
    """Just what decoding asks of a model: one input `x` of the body's datatype."""

    def __init__(self, datatype: str) -> None:
        self.datatype = datatype
        self.name = "echo"
        self.inputs = [self]

    def input_spec(self, name: str):
        if name != "x":
            raise invalid_argument(f"no input {name!r}")
        return self

    def check_datatype(self, spec, declared: str) -> None:
        if declared != self.datatype:
            raise invalid_argument(f"datatype {declared} given")


def _tensor(datatype: str, shape: list[int], data: bytes) -> bytes:
    return (b'{"name":"x","datatype":"%s","shape":%s,"data":%s}'
            % (datatype.encode(), json.dumps(shape).encode(), data))


def flat(size: int, token: bytes, datatype: str = "FP32") -> bytes:
    count = size // (len(token) + 1)
    data = b"[" + b",".join([token] * count) + b"]"
    return b'{"inputs":[' + _tensor(datatype, [count], data) + b"]}"


def nested(size: int, row: int = 16) -> bytes:
    inner = b"[" + b",".join([b"0.25"] * row) + b"]"
    rows = size // (len(inner) + 1)
    data = b"[" + b",".join([inner] * rows) + b"]"
    return b'{"inputs":[' + _tensor("FP32", [rows, row], data) + b"]}"


def tiny_tensors(size: int) -> bytes:
    one = _tensor("FP32", [1], b"[0]")
    count = size // (len(one) + 1)
    return b'{"inputs":[' + b",".join([one] * count) + b"]}"


def _small_input() -> bytes:
    return _tensor("FP32", [1], b"[0]")


def tiny_parameters(size: int) -> bytes:
    count = size // 10
    members = b",".join(b'"p%07d":1' % i for i in range(count))
    return b'{"parameters":{' + members + b'},"inputs":[' + _small_input() + b"]}"


def long_id(size: int) -> bytes:
    return b'{"id":"' + b"i" * size + b'","inputs":[' + _small_input() + b"]}"


def long_shape(size: int) -> bytes:
    count = size // 2
    shape = b"[" + b",".join([b"1"] * count) + b"]"
    return b'{"inputs":[{"name":"x","datatype":"FP32","shape":%s,"data":[0]}]}' % shape


def nested_bytes(size: int) -> bytes:
    rows = size // 12
    data = b"[" + b",".join([b'["ab","cd"]'] * rows) + b"]"
    return b'{"inputs":[' + _tensor("BYTES", [rows, 2], data) + b"]}"


def objects_in_data(size: int) -> bytes:
    count = size // 3
    data = b"[" + b",".join([b"{}"] * count) + b"]"
    return b'{"inputs":[' + _tensor("FP32", [count], data) + b"]}"


SHAPES: dict[str, Callable[[int], bytes]] = {
    "FP32 0.123456": lambda size: flat(size, b"0.123456"),
    "FP32 0": lambda size: flat(size, b"0"),
    "FP64 0": lambda size: flat(size, b"0", "FP64"),
    "FP32 nested 16": nested,
    "BOOL true": lambda size: flat(size, b"true", "BOOL"),
    "tiny tensors": tiny_tensors,
    "tiny parameters": tiny_parameters,
    "long id": long_id,
    "long shape": long_shape,
    "BYTES ab": lambda size: flat(size, b'"ab"', "BYTES"),
    "BYTES 12 chars": lambda size: flat(size, b'"abcdefghijkl"', "BYTES"),
    "BYTES 5 chars": lambda size: flat(size, b'"abcde"', "BYTES"),
    "BYTES nested ab": nested_bytes,
    "objects in data": objects_in_data,
}

# Shapes no real request has: a limit refuses them whole (duplicate input names, the caps of
# zooserve/serving/http_frontend/json_tensors.py, the id and shape limits), so their rows measure
# the refusal and print a note saying so. Every other shape is accepted.
REFUSED_BY_LIMITS = {"tiny tensors", "tiny parameters", "long id", "long shape", "BYTES ab",
                     "BYTES nested ab", "objects in data"}


def _datatype(shape: str) -> str:
    return next((t for t in ("BOOL", "FP64", "BYTES") if t in shape), "FP32")


def refused(body: bytes) -> bytes:
    """The same body with a syntax mistake just before its last three bytes: `]}]`."""
    return body[:-3] + b",]}]" if body.endswith(b"]}]}") else body[:-4] + b",,]}"


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"the number {text[:40]} is out of range for a 64-bit float")
    return value


def _legacy(body: bytes, model: _Model) -> None:
    """The decoder before issue 21: stdlib json on everything, then the list decoder."""
    doc = json.loads(body, parse_float=_finite)
    for tensor in doc["inputs"]:
        codecs.decode_list("x", model.datatype, tensor["shape"], tensor["data"])


def _new(body: bytes, model: _Model) -> None:
    binary.inference_request(model, body, None)  # the body as read_body gives it: no copy


def measure(decode: Callable[[bytes, _Model], None], body: bytes, datatype: str
            ) -> tuple[float, float, str]:
    model = _Model(datatype)
    tracemalloc.start()
    started = time.perf_counter()
    outcome = "accepted"
    try:
        decode(body, model)
    except (ServingError, ValueError) as exc:
        outcome = "refused: " + str(getattr(exc, "message", exc))[:50]
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, peak / len(body), outcome


def server_rss(shapes: list[str], sizes: list[int]) -> None:
    import tempfile
    from pathlib import Path

    import httpx
    import psutil

    from benchmarks.memory import PeakSampler
    from tests.helpers.echo_repository import build_echo_repository, echo_model
    from tests.helpers.server import run_server

    print("\nserver RSS growth per body byte (fresh `zooserve serve`, echo models)")
    print("| shape | MiB | accept status | accept RSS/B | refuse status | refuse RSS/B |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with run_server(build_echo_repository(root / "models"), root) as running:
            process = psutil.Process(running.process.pid)
            with httpx.Client(base_url=running.http_url, timeout=300) as http:
                for shape in shapes:
                    if shape in ("tiny tensors", "tiny parameters", "long id", "long shape"):
                        continue
                    datatype = _datatype(shape)
                    for size in sizes:
                        body = SHAPES[shape](size * MiB).replace(b'"x"', b'"value"', 1)
                        cells = []
                        for payload in (body, refused(body)):
                            before = process.memory_info().rss
                            with PeakSampler(process) as sampler:
                                answer = http.post(f"/v2/models/{echo_model(datatype)}/infer",
                                                   content=payload)
                            cells += [str(answer.status_code),
                                      f"{(sampler.peak - before) / len(payload):.2f}"]
                        print(f"| {shape} | {size} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,16,60", help="body sizes in MiB, comma-separated")
    parser.add_argument("--shapes", default=",".join(SHAPES), help="which body shapes")
    parser.add_argument("--legacy", action="store_true", help="also measure the old decoder")
    parser.add_argument("--server", action="store_true", help="also a real server's RSS")
    args = parser.parse_args()
    sizes = [float(s) for s in args.sizes.split(",")]
    shapes = args.shapes.split(",")
    print("in-process: tracemalloc peak above the body, per body byte; wall seconds")
    print("| shape | MiB | decoder | accept s | accept peak/B | refuse s | refuse peak/B |")
    print("|---|---|---|---|---|---|---|")
    for shape in shapes:
        datatype = _datatype(shape)
        for size in sizes:
            body = SHAPES[shape](int(size * MiB))
            decoders = [("new", _new)] + ([("legacy", _legacy)] if args.legacy else [])
            for label, decode in decoders:
                accept = measure(decode, body, datatype)
                refuse = measure(decode, refused(body), datatype)
                if accept[2] != "accepted" or refuse[2] == "accepted":
                    print(f"<!-- {shape} {size} {label}: {accept[2]} / {refuse[2]} -->")
                print(f"| {shape} | {size:g} | {label} | {accept[0]:.2f} | {accept[1]:.2f} | "
                      f"{refuse[0]:.2f} | {refuse[1]:.2f} |")
    if args.server:
        server_rss(shapes, [int(s) for s in sizes if s >= 1])


if __name__ == "__main__":
    main()

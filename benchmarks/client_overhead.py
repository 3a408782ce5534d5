"""What `zooserve.Client` adds per call over a raw gRPC stub: figures, never assertions.

    .venv/bin/python -m benchmarks.client_overhead [--calls 2000] [--warmup 200] [--rounds 3]

Starts one `zooserve serve` on the shipped zoo as the benchmark harness starts it
(`systems.SYSTEMS["zooserve"]`), then, on one channel each, makes sequential calls of one
penguins row (FP32 [1, 4]) with:

  (a) the generated stub's ModelInfer and a request built once (the floor);
  (b) the stub, building the request from a numpy array each call and reading the output
      back with numpy (what a hand-written client does);
  (c) `zooserve.Client.predict` with the numpy array;
  (d) the same and `.predicted()` (the labels);
  (e) `.predict` with a one-row pandas DataFrame (columns matched to the feature names);
  (f) `.predict` with a nested list;
  (g) tritonclient.grpc's `infer` and `as_numpy`, for comparison (when it is installed).

The variants take turns, `--rounds` times over; each reports the mean and median wall time
per call over all its rounds, the difference from (a), and this process's CPU time per call
(time.process_time: the client's Python and gRPC's threads in this process; the server runs
in another). The server's own time is in every figure alike, so the differences are what
each client adds. A second table times the client's own steps alone, without an RPC.

Run on a quiet machine: on a busy one the wall figures move by a few hundred µs."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks import systems

ROW = np.array([[39.1, 18.7, 181.0, 3750.0]], dtype=np.float32)  # an Adelie
FEATURES = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def _variants(url: str) -> tuple[dict[str, Callable[[], object]], list[Callable[[], None]]]:
    """Each variant's one call, and how to close what they opened."""
    import grpc

    import zooserve
    from zooserve.protocol.generated import grpc_service_pb2 as pb
    from zooserve.protocol.generated import grpc_service_pb2_grpc as pb_grpc

    channel = grpc.insecure_channel(url)
    stub = pb_grpc.GRPCInferenceServiceStub(channel)
    prebuilt = pb.ModelInferRequest(model_name="penguins")
    prebuilt.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    prebuilt.raw_input_contents.append(ROW.tobytes())

    def raw_prebuilt():
        return stub.ModelInfer(prebuilt, timeout=10)

    def raw_from_numpy():
        request = pb.ModelInferRequest(model_name="penguins")
        request.inputs.add(name="features", datatype="FP32", shape=ROW.shape)
        request.raw_input_contents.append(ROW.tobytes())
        response = stub.ModelInfer(request, timeout=10)
        output = response.outputs[0]
        return np.frombuffer(response.raw_output_contents[0], "<f4").reshape(output.shape)

    client = zooserve.Client(url)
    rows = ROW.tolist()
    variants: dict[str, Callable[[], object]] = {
        "(a) raw stub, prebuilt request": raw_prebuilt,
        "(b) raw stub, request from numpy": raw_from_numpy,
        "(c) Client.predict(numpy)": lambda: client.predict("penguins", ROW),
        "(d) Client.predict(numpy).predicted()":
            lambda: client.predict("penguins", ROW).predicted(),
    }
    try:
        import pandas as pd
    except ImportError:
        pass
    else:
        frame = pd.DataFrame(ROW, columns=FEATURES)
        variants["(e) Client.predict(DataFrame)"] = lambda: client.predict("penguins", frame)
    variants["(f) Client.predict(nested list)"] = lambda: client.predict("penguins", rows)
    closers = [channel.close, client.close]
    try:
        import tritonclient.grpc as tritongrpc
    except ImportError:
        pass
    else:
        triton = tritongrpc.InferenceServerClient(url)

        def triton_infer():
            tensor = tritongrpc.InferInput("features", list(ROW.shape), "FP32")
            tensor.set_data_from_numpy(ROW)
            return triton.infer("penguins", [tensor]).as_numpy("probabilities")

        variants["(g) tritonclient.grpc infer + as_numpy"] = triton_infer
        closers.append(triton.close)
    return variants, closers


def _time(call: Callable[[], object], calls: int) -> tuple[list[float], float]:
    """Wall seconds of each call, and this process's CPU seconds for all of them."""
    walls = []
    cpu_before = time.process_time()
    for _ in range(calls):
        started = time.perf_counter()
        call()
        walls.append(time.perf_counter() - started)
    return walls, time.process_time() - cpu_before


Row = tuple[str, float, float, float]  # variant, mean µs, median µs, client CPU µs per call


def measure(url: str, calls: int, warmup: int, rounds: int) -> list[Row]:
    """(variant, mean µs, median µs, client CPU µs) per call, over every round."""
    variants, closers = _variants(url)
    try:
        for call in variants.values():
            for _ in range(warmup):
                call()
        walls: dict[str, list[float]] = {name: [] for name in variants}
        cpu: dict[str, float] = dict.fromkeys(variants, 0.0)
        for _ in range(rounds):
            for name, call in variants.items():
                seconds, cpu_s = _time(call, calls)
                walls[name] += seconds
                cpu[name] += cpu_s
    finally:
        for close in closers:
            close()
    return [(name, statistics.fmean(w) * 1e6, statistics.median(w) * 1e6,
             cpu[name] / len(w) * 1e6) for name, w in walls.items()]


def table(rows: list[Row]) -> str:
    _, floor_mean, floor_p50, _ = rows[0]
    lines = ["| variant | mean µs | p50 µs | mean − (a) µs | p50 − (a) µs | client CPU µs/call |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, mean, p50, cpu in rows:
        lines.append(f"| {name} | {mean:,.0f} | {p50:,.0f} | {mean - floor_mean:+,.0f} | "
                     f"{p50 - floor_p50:+,.0f} | {cpu:,.0f} |")
    return "\n".join(lines)


def steps_alone(calls: int) -> list[tuple[str, float]]:
    """The client's own steps without any RPC, in this process (µs per call): where the
    differences above come from, apart from what any Python between calls costs."""
    import timeit

    from zooserve.client import ModelInfo, TensorInfo, _infer_request, _prediction
    from zooserve.protocol.generated import grpc_service_pb2 as pb

    info = ModelInfo("penguins", ["1"], "onnxruntime_onnx",
                     [TensorInfo("features", "FP32", (-1, 4))],
                     [TensorInfo("probabilities", "FP32", (-1, 3))],
                     ["Adelie", "Chinstrap", "Gentoo"], FEATURES, "", "")
    response = pb.ModelInferResponse(model_name="penguins", model_version="1")
    response.outputs.add(name="probabilities", datatype="FP32", shape=[1, 3])
    response.raw_output_contents.append(np.full((1, 3), 1 / 3, dtype=np.float32).tobytes())
    prediction = _prediction(info, response)
    steps: dict[str, Callable[[], object]] = {
        "request from a numpy array": lambda: _infer_request(info, "penguins", "", ROW),
        "request from a nested list": lambda: _infer_request(info, "penguins", "", ROW.tolist()),
        "response to a Prediction": lambda: _prediction(info, response),
        ".predicted()": prediction.predicted,
    }
    try:
        import pandas as pd
    except ImportError:
        pass
    else:
        frame = pd.DataFrame(ROW, columns=FEATURES)
        steps["request from a DataFrame"] = lambda: _infer_request(info, "penguins", "", frame)
    return [(name, timeit.timeit(step, number=calls) / calls * 1e6)
            for name, step in steps.items()]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls per variant per round")
    parser.add_argument("--warmup", type=int, default=200, help="calls per variant first")
    parser.add_argument("--rounds", type=int, default=3, help="turns each variant takes")
    args = parser.parse_args(argv)

    logs = Path(tempfile.mkdtemp(prefix="zooserve-client-overhead-"))
    running = systems.SYSTEMS["zooserve"].start(logs)
    try:
        rows = measure(running.grpc_target, args.calls, args.warmup, args.rounds)
    finally:
        systems.stop(running)
    print(f"penguins, one row, sequential calls on loopback: {args.rounds} rounds x "
          f"{args.calls:,} calls per variant after {args.warmup} warm-up calls")
    print(table(rows))
    print()
    print("the client's own steps, no RPC, in this process:")
    print("| step | µs per call |\n|---|---:|")
    for name, micros in steps_alone(max(args.calls, 100) * args.rounds):
        print(f"| {name} | {micros:,.1f} |")


if __name__ == "__main__":
    main()

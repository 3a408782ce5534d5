"""Triton Inference Server (2.51, bundled by nvidia-pytriton 0.7.0) serving the benchmark models,
each run by ONNX Runtime inside the Python function pytriton binds; with --dynamic-batching,
Triton's dynamic batcher (no queue delay) gathers concurrent requests into one call.

Runs in its own venv (benchmarks/peers/venvs.py), never the project's. Triton's Python backend
stub loads libpython3.11, so the harness puts the interpreter's lib folder on LD_LIBRARY_PATH.
Stop it with SIGTERM to its tritonserver child.

    <triton venv>/bin/python benchmarks/peers/triton_server.py --models models --grpc-port 18001 \
        --http-port 18000 --metrics-port 18002 [--dynamic-batching] penguins digits
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from ort_session import one_thread_session  # this folder is the script's path
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

MAX_BATCH = 64


def bind(triton: Triton, name: str, path: Path, dynamic_batching: bool) -> None:
    session = one_thread_session(path)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {out.name: session.run([out.name], {inp.name: inputs[inp.name]})[0]}

    batcher = DynamicBatcher(max_queue_delay_microseconds=0) if dynamic_batching else None
    triton.bind(
        model_name=name, infer_func=infer,
        inputs=[Tensor(name=inp.name, dtype=np.float32, shape=tuple(inp.shape[1:]))],
        outputs=[Tensor(name=out.name, dtype=np.float32, shape=tuple(out.shape[1:]))],
        config=ModelConfig(batching=True, max_batch_size=MAX_BATCH, batcher=batcher),
        strict=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, required=True)
    parser.add_argument("--dynamic-batching", action="store_true")
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    config = TritonConfig(grpc_address="127.0.0.1", grpc_port=args.grpc_port,
                          http_address="127.0.0.1", http_port=args.http_port,
                          metrics_port=args.metrics_port, allow_gpu_metrics=False,
                          log_verbose=0, exit_timeout_secs=5)
    with Triton(config=config) as triton:
        for name in args.names:
            bind(triton, name, args.models / name / "1" / "model.onnx", args.dynamic_batching)
        triton.serve()


if __name__ == "__main__":
    main()

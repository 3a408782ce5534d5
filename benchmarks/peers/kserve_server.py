"""KServe's Python ModelServer (0.21) serving the benchmark models with a small kserve.Model
that runs ONNX Runtime (one intra-op thread) inline in its predict; gRPC v2 on --grpc_port.

Runs in its own venv (benchmarks/peers/venvs.py). KServe reads its settings from the command
line at import time, so they are passed as KServe's own flags:

    <kserve venv>/bin/python benchmarks/peers/kserve_server.py --models models \
        --http_port 18080 --grpc_port 18081 --enable_latency_logging false
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from ort_session import one_thread_session  # this folder is the script's path

NAMES = ("penguins", "digits")


class OnnxModel(Model):
    """One ONNX file, its first input in and its outputs out, FP32."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.path = path
        self.load()

    def load(self) -> bool:
        self.session = one_thread_session(self.path)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None, response_headers=None) -> InferResponse:
        array = payload.inputs[0].as_numpy()
        results = self.session.run(self.output_names, {self.input_name: array})
        outputs = []
        for name, result in zip(self.output_names, results, strict=True):
            output = InferOutput(name=name, shape=list(result.shape), datatype="FP32")
            output.set_data_from_numpy(result, binary_data=payload.from_grpc)  # raw over gRPC
            outputs.append(output)
        return InferResponse(response_id=payload.id, model_name=self.name,
                             infer_outputs=outputs, use_binary_outputs=payload.from_grpc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, required=True)
    args, _ = parser.parse_known_args()  # the rest are KServe's own flags
    models = [OnnxModel(name, args.models / name / "1" / "model.onnx") for name in NAMES]
    server = ModelServer()
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.WARNING)
    server.start(models)


if __name__ == "__main__":
    main()

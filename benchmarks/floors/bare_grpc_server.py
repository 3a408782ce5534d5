"""The Python gRPC floor: the least a grpc.aio server must do to answer ModelInfer.

It parses the ModelInferRequest, reads the raw input with numpy.frombuffer, runs ONNX Runtime
inline on the event loop (one intra-op thread, one inter-op thread, no spinning), encodes the
output with one tobytes and answers a ModelInferResponse. Nothing else: no validation beyond
what numpy needs, no statistics, no health service, no batching. Only zooserve's generated
protobuf modules are imported from the project.

    .venv/bin/python -m benchmarks.floors.bare_grpc_server --port 18001 penguins digits
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import grpc
import numpy as np

from benchmarks.peers.ort_session import one_thread_session
from zooserve.protocol.generated import grpc_service_pb2 as pb

SERVICE = "inference.GRPCInferenceService"


class BareModel:
    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.session = one_thread_session(path)
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        shape = list(request.inputs[0].shape)
        array = np.frombuffer(request.raw_input_contents[0], dtype=np.float32).reshape(shape)
        results = self.session.run(self.output_names, {self.input_name: array})
        response = pb.ModelInferResponse(model_name=self.name, model_version="1",
                                         id=request.id)
        for name, result in zip(self.output_names, results, strict=True):
            response.outputs.add(name=name, datatype="FP32", shape=result.shape)
            response.raw_output_contents.append(result.tobytes())
        return response


def handlers(models: dict[str, BareModel]) -> grpc.GenericRpcHandler:
    async def model_infer(request: pb.ModelInferRequest, context) -> pb.ModelInferResponse:
        model = models.get(request.model_name)
        if model is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no model {request.model_name}")
        return model.infer(request)

    async def server_ready(request, context) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    return grpc.method_handlers_generic_handler(SERVICE, {
        "ModelInfer": grpc.unary_unary_rpc_method_handler(
            model_infer, request_deserializer=pb.ModelInferRequest.FromString,
            response_serializer=pb.ModelInferResponse.SerializeToString),
        "ServerReady": grpc.unary_unary_rpc_method_handler(
            server_ready, request_deserializer=pb.ServerReadyRequest.FromString,
            response_serializer=pb.ServerReadyResponse.SerializeToString),
    })


async def serve(models_dir: Path, names: list[str], host: str, port: int) -> None:
    models = {name: BareModel(name, models_dir / name / "1" / "model.onnx") for name in names}
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handlers(models),))
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    await server.wait_for_termination()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=18001)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args()
    asyncio.run(serve(args.models, args.names, args.host, args.port))


if __name__ == "__main__":
    main()

"""`inference.GRPCInferenceService`: each RPC converts, delegates to the DataPlane, converts
back."""

from __future__ import annotations

import functools

import grpc

from service.dataplane import DataPlane
from service.grpc_frontend import messages
from service.grpc_frontend.generated import grpc_service_pb2 as pb
from service.grpc_frontend.generated import grpc_service_pb2_grpc as pb_grpc
from service.grpc_frontend.status import grpc_status

# Triton protocol extensions that zooserve implements in full.
EXTENSIONS = ["model_configuration", "statistics"]


def _answers_errors(method):
    """Every exception becomes its gRPC status through the one translation in `status`."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except Exception as exc:
            code, message = grpc_status(exc, method.__name__)
        await context.abort(code, message)

    return wrapper


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    @_answers_errors
    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=self.dataplane.live())

    @_answers_errors
    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self.dataplane.ready())

    @_answers_errors
    async def ModelReady(self, request, context):
        return pb.ModelReadyResponse(
            ready=self.dataplane.model_ready(request.name, request.version or None)
        )

    @_answers_errors
    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(
            name=self.dataplane.server_name,
            version=self.dataplane.server_version,
            extensions=EXTENSIONS,
        )

    @_answers_errors
    async def ModelMetadata(self, request, context):
        model = self.dataplane.model(request.name, request.version or None)
        return messages.model_metadata(model, self.dataplane.versions(model.name))

    @_answers_errors
    async def ModelInfer(self, request, context):
        model = self.dataplane.model(request.model_name, request.model_version or None)
        response = await self.dataplane.infer(messages.inference_request(request, model))
        return messages.infer_response(response)

    @_answers_errors
    async def ModelConfig(self, request, context):
        return messages.model_config(self.dataplane.model(request.name, request.version or None))

    @_answers_errors
    async def ModelStatistics(self, request, context):
        return messages.model_statistics(self.dataplane.statistics(request.name, request.version))

    @_answers_errors
    async def RepositoryIndex(self, request, context):
        return messages.repository_index(self.dataplane.index(), request.ready)

"""`inference.GRPCInferenceService`: each RPC converts, delegates to the DataPlane, converts
back."""

from __future__ import annotations

import functools
import logging

import grpc

from service.dataplane import DataPlane
from service.errors import ServingError
from service.grpc_frontend import messages
from service.grpc_frontend.generated import grpc_service_pb2 as pb
from service.grpc_frontend.generated import grpc_service_pb2_grpc as pb_grpc
from service.grpc_frontend.status import STATUS_BY_KIND

log = logging.getLogger(__name__)

# Triton protocol extensions that zooserve implements in full.
EXTENSIONS = ["model_configuration", "statistics"]


def _answers_errors(method):
    """Turn core errors into their gRPC status; anything else is our bug: INTERNAL, logged."""

    @functools.wraps(method)
    async def wrapper(self, request, context: grpc.aio.ServicerContext):
        try:
            return await method(self, request, context)
        except ServingError as exc:
            log.info("%s: %s: %s", method.__name__, exc.kind.name, exc.message)
            error = exc
        except Exception:
            log.exception("%s failed", method.__name__)
            error = None
        if error is None:
            await context.abort(grpc.StatusCode.INTERNAL, "internal error; the server log has it")
        await context.abort(STATUS_BY_KIND[error.kind], error.message)

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
        versions = self.dataplane.repository.versions(model.name)
        return messages.model_metadata(model, versions)

    @_answers_errors
    async def ModelInfer(self, request, context):
        response = await self.dataplane.infer(messages.inference_request(request))
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

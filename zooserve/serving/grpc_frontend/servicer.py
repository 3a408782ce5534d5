"""`inference.GRPCInferenceService`: each RPC converts, delegates to the DataPlane, converts
back."""

from __future__ import annotations

import asyncio
import functools
import time

import grpc

from zooserve.protocol.generated import grpc_service_pb2 as pb
from zooserve.protocol.generated import grpc_service_pb2_grpc as pb_grpc
from zooserve.serving.dataplane import DataPlane
from zooserve.serving.grpc_frontend import messages
from zooserve.serving.grpc_frontend.status import grpc_status

# Triton protocol extensions that zooserve implements in full.
EXTENSIONS = ["model_configuration", "statistics"]
# Triton's model-repository extension (RepositoryModelLoad / RepositoryModelUnload), advertised
# only when --model-control is explicit or poll.
MODEL_REPOSITORY = "model_repository"
# Requests of one stream in flight at once.
STREAM_WINDOW = 128


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
            extensions=EXTENSIONS + (
                [MODEL_REPOSITORY] if self.dataplane.model_control != "none" else []
            ),
        )

    @_answers_errors
    async def ModelMetadata(self, request, context):
        model = self.dataplane.model(request.name, request.version or None)
        return messages.model_metadata(model, self.dataplane.versions(model.name))

    # RPCs whose request arrives as its serialised bytes (grpc_frontend.server registers them so).
    RAW_REQUESTS = frozenset({"ModelInfer"})

    @_answers_errors
    async def ModelInfer(self, request, context):
        received = time.perf_counter_ns()
        cut = None
        if isinstance(request, bytes):
            request, cut = await self.dataplane.off_loop_if_large(
                messages.parse_infer_request, request)
        return await self._infer(request, received, _deadline(context), cut)

    async def ModelStreamInfer(self, request_iterator, context):
        """Triton's streaming inference: many requests on one bidirectional stream, each
        answered on it as a ModelStreamInferResponse, in the order they came. The client
        pays gRPC's per-call cost once per stream, not once per request. Requests of one
        stream run concurrently (so they batch together); at most STREAM_WINDOW are in
        flight, beyond that the stream is not read (gRPC's flow control holds the client).
        A request's error is its own response's `error_message`; the stream goes on."""
        in_order: asyncio.Queue = asyncio.Queue(maxsize=STREAM_WINDOW)

        async def read() -> None:
            try:
                async for request in request_iterator:
                    received = time.perf_counter_ns()
                    await in_order.put(asyncio.ensure_future(self._stream_one(request, received)))
            finally:
                await in_order.put(None)

        reader = asyncio.ensure_future(read())
        try:
            while (answer := await in_order.get()) is not None:
                yield await answer
            await reader  # a broken stream raises here
        finally:
            reader.cancel()
            while not in_order.empty():
                left = in_order.get_nowait()
                if left is not None:
                    left.cancel()

    async def _infer(
        self, request: pb.ModelInferRequest, received: int, deadline: float | None,
        cut: messages.Cut | None = None,
    ) -> pb.ModelInferResponse:
        """One ModelInferRequest, unary or from a stream: the model looked up first (NOT_FOUND
        before anything is decoded), then admitted, decoded, run and encoded. `cut`: its
        tensor data, when parsing cut it out (messages.parse_infer_request)."""
        model = self.dataplane.model(request.model_name, request.model_version or None)
        return await self.dataplane.infer_message(
            model,
            lambda: messages.inference_request(request, model, received, deadline, cut),
            messages.payload_bytes(request, cut),
            messages.infer_response,
        )

    async def _stream_one(self, request, received: int) -> pb.ModelStreamInferResponse:
        try:
            response = await self._infer(request, received, None)
        except Exception as exc:
            _, message = grpc_status(exc, "ModelStreamInfer")
            return pb.ModelStreamInferResponse(
                error_message=message,
                infer_response=pb.ModelInferResponse(
                    model_name=request.model_name, model_version=request.model_version,
                    id=request.id,
                ),
            )
        return pb.ModelStreamInferResponse(infer_response=response)

    @_answers_errors
    async def ModelConfig(self, request, context):
        return messages.model_config(self.dataplane.model(request.name, request.version or None))

    @_answers_errors
    async def ModelStatistics(self, request, context):
        return messages.model_statistics(self.dataplane.statistics(request.name, request.version))

    @_answers_errors
    async def RepositoryIndex(self, request, context):
        return messages.repository_index(self.dataplane.index(), request.ready)

    @_answers_errors
    async def RepositoryModelLoad(self, request, context):
        # Parameters go to the core as they came (it refuses every one, by name).
        parameters = {
            key: getattr(value, value.WhichOneof("parameter_choice") or "string_param")
            for key, value in request.parameters.items()
        }
        await self.dataplane.load_model(request.model_name, parameters)
        return pb.RepositoryModelLoadResponse()

    @_answers_errors
    async def RepositoryModelUnload(self, request, context):
        await self.dataplane.unload_model(request.model_name)
        return pb.RepositoryModelUnloadResponse()


def _deadline(context: grpc.aio.ServicerContext) -> float | None:
    """The client's deadline as time.monotonic(), for the model's queue to honour."""
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining

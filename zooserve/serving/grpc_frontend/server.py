"""Start and stop the gRPC server: the inference service, health checking and reflection.

gRPC sets SO_REUSEPORT on its listeners unless told not to, and then a second server on the
same port starts without a word and the kernel splits the connections between the two. So
it is off unless the caller shares the port on purpose (`zooserve serve --workers N`).

TLS, the bearer token and whether reflection is on come from `zooserve.serving.security`: with a
certificate the port is a TLS port (mutual TLS with a client CA), and an interceptor checks
the token on every method but health, and refuses repository load/unload when there is no
token at all."""

from __future__ import annotations

import logging

import grpc
from google.protobuf import descriptor_pool, message_factory
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2

from zooserve.protocol.generated import grpc_service_pb2 as pb
from zooserve.serving.dataplane import DataPlane, DrainReport
from zooserve.serving.grpc_frontend.servicer import InferenceServicer
from zooserve.serving.security import PLAINTEXT, Security

log = logging.getLogger(__name__)

INFERENCE_SERVICE = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
# After the drain, what is left is connections, not requests: this closes them.
CLOSE_GRACE_S = 1.0


class GrpcFrontend:
    """A running gRPC server over one DataPlane."""

    def __init__(self, dataplane: DataPlane, server: grpc.aio.Server, port: int, health_servicer):
        self.dataplane = dataplane
        self.server = server
        self.port = port
        self.health = health_servicer
        self._model_names: set[str] = set()  # every model name health has reported

    async def refresh_health(self) -> None:
        """Health from the DataPlane: "" and the inference service SERVING when the server is
        ready; each model SERVING when a version of it serves, NOT_SERVING when it was found
        but none loaded (or it was unloaded), so a probe on one model sees that model."""
        serving = health_pb2.HealthCheckResponse.SERVING
        not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
        overall = serving if self.dataplane.ready() else not_serving
        await self.health.set("", overall)
        await self.health.set(INFERENCE_SERVICE, overall)
        names = set(self.dataplane.names())
        for name in names:
            await self.health.set(name, serving)
        for name in set(self.dataplane.failed_names()) | (self._model_names - names):
            await self.health.set(name, not_serving)
        self._model_names |= names

    async def start_draining(self) -> None:
        """Health turns NOT_SERVING for the server and every model, for good."""
        await self.health.enter_graceful_shutdown()

    async def close(self) -> None:
        """Close the connections. Call it after the drain: what is left then is connections,
        not requests."""
        await self.server.stop(CLOSE_GRACE_S)

    async def stop(self, drain_timeout: float) -> DrainReport:
        """Drain, then close: health turns NOT_SERVING and ServerReady false, new inference
        requests are refused with UNAVAILABLE, and the requests already taken on are answered
        (up to `drain_timeout` seconds) before the server closes its connections."""
        await self.start_draining()
        report = await self.dataplane.drain(drain_timeout)
        await self.close()
        return report


def _reflection_pool() -> descriptor_pool.DescriptorPool:
    """A descriptor pool holding every file reflection describes: ours (which live in
    zooserve's own pool, not the default one; see proto/generate.py), and the health and
    reflection services' (which live in the default pool). Each file after its imports."""
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file) -> None:
        if file.name not in added:
            for dependency in file.dependencies:
                add(dependency)
            pool.AddSerializedFile(file.serialized_pb)
            added.add(file.name)

    for file in (pb.DESCRIPTOR, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        add(file)
    return pool


def _add_inference_service(servicer: InferenceServicer, server: grpc.aio.Server) -> None:
    """Register every RPC of the inference service, as the generated code would, except that
    the methods in `servicer.RAW_REQUESTS` get their request's bytes unparsed: ModelInfer
    parses a large request on an inference thread, so parsing 60 MB does not hold up the
    event loop (and a message that is not protobuf is the client's mistake, not INTERNAL)."""
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {}
    for method in service.methods:
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        if method.client_streaming and method.server_streaming:
            make = grpc.stream_stream_rpc_method_handler
        elif not (method.client_streaming or method.server_streaming):
            make = grpc.unary_unary_rpc_method_handler
        else:  # the protocol has none; refuse to guess rather than serve it wrongly
            raise TypeError(f"{method.full_name}: half-streaming RPCs are not handled")
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=None
            if method.name in servicer.RAW_REQUESTS
            else request_type.FromString,
            response_serializer=response_type.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )


async def start_grpc_server(
    dataplane: DataPlane, host: str, port: int, reuse_port: bool = False,
    security: Security = PLAINTEXT, max_message_bytes: int = MAX_MESSAGE_BYTES,
) -> GrpcFrontend:
    """Listen on host:port. `reuse_port`: share the port with other processes that set it
    too (the workers of one `zooserve serve`); off, a port in use is an error. `security`:
    TLS, the token and reflection (plaintext, no token, reflection on by default)."""
    pending_limit = max(10_000, 4 * dataplane.max_inflight)
    server = grpc.aio.server(
        interceptors=security.grpc_interceptors(),
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            # gRPC core cancels calls the application has not yet picked up beyond 1,000 of
            # them (a soft limit; 3,000 hard), silently: 5-10% of a burst of 2,000 came back
            # CANCELLED, never run. Far higher here, so every call reaches the DataPlane's
            # admission control, which answers RESOURCE_EXHAUSTED naming its limit.
            ("grpc.server.max_pending_requests", pending_limit),
            ("grpc.server.max_pending_requests_hard_limit", 3 * pending_limit),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
    )
    _add_inference_service(InferenceServicer(dataplane), server)

    # Health: "" for the whole server, the service name, and each model by name, so a
    # Kubernetes gRPC probe can watch one model.
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)

    if security.reflection:
        reflection.enable_server_reflection(
            [INFERENCE_SERVICE, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
             reflection.SERVICE_NAME],
            server,
            pool=_reflection_pool(),
        )
    credentials = security.grpc_server_credentials()
    try:
        if credentials is None:
            bound = server.add_insecure_port(f"{host}:{port}")
        else:
            bound = server.add_secure_port(f"{host}:{port}", credentials)
    except RuntimeError:  # recent grpcio raises where older versions returned 0
        bound = 0
    if bound == 0:
        raise OSError(f"cannot listen for gRPC on {host}:{port} (in use or not allowed)")
    frontend = GrpcFrontend(dataplane, server, bound, health_servicer)
    await frontend.refresh_health()
    dataplane.add_listener(frontend.refresh_health)
    await server.start()
    log.info("gRPC server listening on %s:%d (%s)", host, bound,
             "TLS" if security.tls else "plaintext")
    return frontend

"""Ask a running server's gRPC health service (grpc.health.v1) whether it serves: `zooserve
health`, the container image's HEALTHCHECK, and any probe that can run a command."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def health_status(url: str, service: str = "", timeout: float = 3.0) -> str:
    """The status name (SERVING, NOT_SERVING, ...) the server gives for `service` ("" is the
    whole server). A server that cannot be reached or does not know the service raises
    ConnectionError with a one-line reason."""
    with grpc.insecure_channel(url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if exc.code() else "UNKNOWN"
            raise ConnectionError(f"{url}: {code}: {exc.details()}") from None
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

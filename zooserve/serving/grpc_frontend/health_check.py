"""Ask a running server's gRPC health service (grpc.health.v1) whether it serves: `zooserve
health`, the container image's HEALTHCHECK, and any probe that can run a command."""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def health_status(
    url: str, service: str = "", timeout: float = 3.0,
    credentials: grpc.ChannelCredentials | None = None, server_name: str | None = None,
) -> str:
    """The status name (SERVING, NOT_SERVING, ...) the server gives for `service` ("" is the
    whole server). A server that cannot be reached or does not know the service raises
    ConnectionError with a one-line reason. With `credentials` the channel is TLS;
    `server_name` is the name the server's certificate must carry, when it is not the host
    of `url` (a probe asks localhost, the certificate names the Service). Health needs no
    token."""
    if credentials is None:
        channel = grpc.insecure_channel(url)
    else:
        options = [("grpc.ssl_target_name_override", server_name)] if server_name else []
        channel = grpc.secure_channel(url, credentials, options=options)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            code = exc.code().name if exc.code() else "UNKNOWN"
            raise ConnectionError(f"{url}: {code}: {exc.details()}") from None
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

"""The ports `zooserve serve` listens on, checked before any model loads.

A port already taken should stop the server at once with one line naming it, not after the
whole zoo has loaded. gRPC and the HTTP frontend set SO_REUSEADDR on their listeners, and
the kernel then still refuses a second bind to a port another socket listens on, unless
both sockets set SO_REUSEPORT. So a bind with SO_REUSEADDR and without SO_REUSEPORT fails
exactly when the real listener would (also when the other listener set SO_REUSEPORT: the
kernel shares a port only among sockets that all set it). This is a check, not a
reservation: a process that takes the port between the check and the real bind still makes
the real bind fail, with the frontend's own message."""

from __future__ import annotations

import socket

HTTP_PORT = 8000  # `zooserve serve`'s HTTP port unless ZOOSERVE_HTTP_PORT says otherwise


def check_port_free(host: str, port: int, what: str) -> int:
    """Raise OSError ("cannot listen for {what} on host:port (...)") when the port cannot be
    bound; return the port, or for port 0 one the kernel chose that was free just now."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen for {what} on {host}:{port} ({exc.strerror})") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise OSError(
                f"cannot listen for {what} on {host}:{port} ({exc.strerror})"
            ) from None
        return probe.getsockname()[1]

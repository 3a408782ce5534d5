"""Run the KServe v2 REST app inside `zooserve serve`'s event loop, beside the gRPC server and
over the same DataPlane, with uvicorn. With TLS settings uvicorn serves HTTPS (and asks for a
client certificate with a client CA); the bearer-token middleware of `zooserve.serving.security`
wraps the app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import uvicorn

from zooserve.serving.dataplane import DataPlane
from zooserve.serving.http_frontend.body import BodyGuard
from zooserve.serving.http_frontend.connection import ConnectionLimits, guarded_protocol
from zooserve.serving.http_frontend.rest import build_v2_app
from zooserve.serving.security import PLAINTEXT, Security
from zooserve.serving.settings import Settings

log = logging.getLogger(__name__)
DEFAULTS = Settings()


class _Server(uvicorn.Server):
    """uvicorn without its own SIGINT/SIGTERM handling: `zooserve serve` owns the signals and
    drains every frontend together."""

    @contextlib.contextmanager
    def capture_signals(self):
        yield


class HttpFrontend:
    """A running HTTP server over one DataPlane (the `Frontend` the REST app asks for)."""

    def __init__(self, dataplane: DataPlane, server: _Server, task: asyncio.Task, port: int,
                 guard: BodyGuard):
        self.dataplane = dataplane
        self.port = port
        self._server = server
        self._task = task
        self._guard = guard

    def ready(self) -> bool:
        return self.dataplane.ready()

    async def stop(self) -> None:
        """Close the listener and the idle connections; requests still running finish first
        (the DataPlane's drain has already waited for them); a request whose body is still
        awaited is answered 503, rather than cancelled by uvicorn with a traceback."""
        self._guard.stop_reading()
        self._server.should_exit = True
        await self._task


def _listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, so asyncio sets TCP_NODELAY on each accepted connection (it checks
    # the protocol number): else Nagle holds a response's body behind its head until the
    # client's delayed ACK, 40 ms on every request after a connection's first.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:  # the workers of one `zooserve serve --workers N` share the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen for HTTP on {host}:{port} ({exc.strerror})") from None
    sock.listen(1024)
    sock.setblocking(False)
    return sock


async def start_http_server(
    dataplane: DataPlane, host: str, port: int, settings: Settings = DEFAULTS,
    reuse_port: bool = False, security: Security = PLAINTEXT,
) -> HttpFrontend:
    """Listen on host:port (SO_REUSEPORT only with `reuse_port`, as the gRPC server), with
    `security`'s TLS and token (plaintext and open by default), and the limits `settings`
    sets on request bodies and connections (body.py, connection.py)."""
    sock = _listen(host, port, reuse_port)
    frontend: HttpFrontend | None = None
    app = build_v2_app(lambda: frontend, settings.max_request_bytes,
                       settings.http_body_timeout, settings.http_body_buffer_bytes)
    # The guard outside the token check too, so a refusal of either before the body is
    # read closes the connection.
    guard = BodyGuard(security.wrap_asgi(app), settings.max_request_bytes,
                      settings.http_body_timeout)
    limits = ConnectionLimits(settings.http_header_timeout, settings.http_body_timeout,
                              settings.http_idle_timeout, settings.http_max_connections)
    config = uvicorn.Config(
        guard, lifespan="off", access_log=False, log_level="warning",
        http=guarded_protocol(limits), timeout_keep_alive=limits.idle_timeout,
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout)),
        **security.uvicorn_ssl_options(),
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():  # it failed to start: say why
            task.result()
            raise OSError(f"the HTTP server on {host}:{port} stopped while starting")
        await asyncio.sleep(0.01)
    bound = sock.getsockname()[1]
    frontend = HttpFrontend(dataplane, server, task, bound, guard)
    log.info("HTTP server (KServe v2 REST) listening on %s:%d (%s)", host, bound,
             "HTTPS" if security.tls else "plaintext")
    return frontend

"""The `zooserve serve` process: one DataPlane, and over it the gRPC server (8001), the HTTP
server with the KServe v2 REST paths (8000) and the Prometheus metrics (8002), as Triton lays
them out. It runs until SIGINT or SIGTERM, then drains every frontend together: health turns
NOT_SERVING, new requests are refused (gRPC UNAVAILABLE, HTTP 503), the requests already taken
on are answered, and only then do the listeners close."""

from __future__ import annotations

import asyncio
import logging
import signal

from service.dataplane import DataPlane
from service.grpc_frontend.server import start_grpc_server
from service.http_frontend.server import start_http_server
from service.metrics import start_metrics_server
from service.settings import Settings

log = logging.getLogger(__name__)

HTTP_PORT = 8000  # `zooserve serve`'s HTTP port unless ZOOSERVE_HTTP_PORT says otherwise


async def _serve(settings: Settings) -> None:
    dataplane = DataPlane.from_settings(settings)
    grpc_frontend = await start_grpc_server(dataplane, settings.host, settings.grpc_port)
    http_port = HTTP_PORT if settings.http_port is None else settings.http_port
    try:
        http_frontend = await start_http_server(
            dataplane, settings.host, http_port, settings.drain_timeout
        )
    except OSError:
        await grpc_frontend.close()
        raise
    try:
        metrics = start_metrics_server(dataplane, settings.host, settings.metrics_port)
    except OSError:
        await asyncio.gather(grpc_frontend.close(), http_frontend.stop())
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("ready: %d model versions", len(dataplane.models()))
    await stop.wait()

    log.info("draining: new requests refused, up to %.0f s for those in flight",
             settings.drain_timeout)
    await grpc_frontend.start_draining()
    report = await dataplane.drain(settings.drain_timeout)
    if report.answered < report.accepted:
        log.warning("drain timed out: %s", report.describe())
    else:
        log.info("drained: %s", report.describe())
    await asyncio.gather(grpc_frontend.close(), http_frontend.stop())
    dataplane.close()
    metrics.shutdown()


def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then drain and exit."""
    asyncio.run(_serve(settings))

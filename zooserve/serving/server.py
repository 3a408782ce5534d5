"""The `zooserve serve` process: one DataPlane, and over it the gRPC server (8001), the HTTP
server with the KServe v2 REST paths (8000) and the Prometheus metrics (8002), as Triton lays
them out. It runs until SIGINT or SIGTERM, then drains every frontend together: health turns
NOT_SERVING and readiness false at once, requests are still taken for the drain delay (for
load balancers to notice), then new ones are refused (gRPC UNAVAILABLE, HTTP 503), the
requests already taken on are answered (up to the drain timeout), and only then do the
listeners close.

The ports are checked before the models load, so a port in use stops the server at once with
one line naming it; no listener sets SO_REUSEPORT, so a second server on a port in use fails
instead of sharing it (unless `--reuse-port` asks). With `--workers N` (N > 1) the process
is a parent instead (`zooserve.serving.workers`), and each of its workers runs this same server,
sharing the gRPC and HTTP ports on purpose, with its metrics on a loopback port its parent
reads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from zooserve.repository.layout import LIBRARY_FILE, MODEL_FILE
from zooserve.serving.dataplane import DataPlane
from zooserve.serving.grpc_frontend.server import start_grpc_server
from zooserve.serving.http_frontend.server import start_http_server
from zooserve.serving.load_options import signature_keys
from zooserve.serving.loaded_model import LoadedModel
from zooserve.serving.memory import return_large_buffers_to_the_system, trim_when_idle
from zooserve.serving.metrics import start_metrics_server
from zooserve.serving.model_kinds import ModelKinds
from zooserve.serving.ports import HTTP_PORT, check_port_free
from zooserve.serving.search.model import SearchModel
from zooserve.serving.security import Security, load_security
from zooserve.serving.settings import Settings
from zooserve.serving.workers import WorkerLink, serve_workers

log = logging.getLogger(__name__)


def model_kinds() -> ModelKinds:
    """The kinds of model this server serves, by the file a version folder holds: an ONNX
    model, or a spectral library searched with its embedding model. The repository is given
    this table and names no kind itself; the Bento serves the same."""
    return {MODEL_FILE: LoadedModel.load, LIBRARY_FILE: SearchModel.load}


__all__ = ["HTTP_PORT", "model_kinds", "serve", "serve_worker"]


async def _serve(settings: Settings, worker: WorkerLink | None = None,
                 security: Security | None = None) -> None:
    """Serve until SIGINT or SIGTERM (a worker: SIGTERM, or its parent gone), then drain.
    `security`: as `load_security` made it already (a worker makes its own)."""
    # SO_REUSEPORT on the gRPC and HTTP ports: between the workers of one server always,
    # with other processes only when --reuse-port asks for it.
    sharing = worker is not None or settings.reuse_port
    if security is None:  # TLS, token, reflection: checked before models load
        security = load_security(settings)
    return_large_buffers_to_the_system()  # see zooserve/serving/memory.py
    trim_when_idle()
    dataplane = DataPlane.from_settings(settings, model_kinds())
    grpc_frontend = await start_grpc_server(
        dataplane, settings.host, settings.grpc_port, reuse_port=sharing, security=security,
        max_message_bytes=settings.max_request_bytes,
    )
    http_port = HTTP_PORT if settings.http_port is None else settings.http_port
    try:
        http_frontend = await start_http_server(
            dataplane, settings.host, http_port, settings, reuse_port=sharing,
            security=security,
        )
    except OSError:
        await grpc_frontend.close()
        raise
    try:
        if worker is None:
            metrics = start_metrics_server(dataplane, settings.host, settings.metrics_port)
        else:  # only the parent reads it, and serves the sum over the workers
            metrics = start_metrics_server(dataplane, "127.0.0.1", 0, quiet=True)
    except OSError:
        await asyncio.gather(grpc_frontend.close(), http_frontend.stop())
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # A worker leaves SIGINT to its parent, which forwards a SIGTERM to every worker.
    for sig in (signal.SIGINT, signal.SIGTERM) if worker is None else (signal.SIGTERM,):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP: look at the repository again (--model-control poll or explicit; with none it
    # is logged and ignored), as daemons reread their configuration; never the default, exit.
    loop.add_signal_handler(signal.SIGHUP, dataplane.rescan_soon, "SIGHUP")
    dataplane.start_model_control()
    log.info("ready: %d model versions", len(dataplane.models()))
    if worker is not None:
        worker.watch_parent(loop, stop.set)
        worker.ready(metrics.server_port)
        if worker.stop_requested():  # a SIGTERM while the models loaded
            stop.set()
    await stop.wait()

    # Readiness turns false at once (gRPC health, ServerReady, HTTP ready); requests are
    # still taken for the drain delay, so load balancers stop sending before any is refused.
    dataplane.stop_ready()
    await grpc_frontend.start_draining()
    if settings.drain_delay > 0:
        log.info("draining: not ready; still taking requests for %g s (drain delay; a second "
                 "signal skips it)", settings.drain_delay)
        stop.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.drain_delay)
    log.info("draining: new requests refused, up to %g s for those in flight",
             settings.drain_timeout)
    report = await dataplane.drain(settings.drain_timeout)
    if report.answered < report.accepted:
        log.warning("drain timed out: %s", report.describe())
    else:
        log.info("drained: %s", report.describe())
    await asyncio.gather(grpc_frontend.close(), http_frontend.stop())
    dataplane.close()
    metrics.shutdown()


def serve(settings: Settings) -> None:
    """Serve until SIGINT or SIGTERM, then drain and exit; with `settings.workers` > 1, as
    the parent of that many workers (zooserve.serving.workers)."""
    security = load_security(settings)  # a TLS or token mistake stops here, at once
    if settings.workers > 1:
        # Checked here too: in a worker a key that cannot be used would not be one line.
        signature_keys(settings.verify_key)
        serve_workers(settings, security, serve_worker)
        return
    if not settings.reuse_port:  # with it, a port another server shares is not an error
        check_port_free(settings.host, settings.grpc_port, "gRPC")
        check_port_free(settings.host, HTTP_PORT if settings.http_port is None
                        else settings.http_port, "HTTP")
    check_port_free(settings.host, settings.metrics_port, "metrics")
    log.info(security.describe())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # while the models load; then _serve's
    asyncio.run(_serve(settings, security=security))


def serve_worker(settings: Settings, worker: WorkerLink) -> None:
    """One worker of `zooserve serve --workers N`: the same server, on shared ports. The
    parent hands this function to its workers (`serve_workers`), so that workers.py need
    not import this module, which imports it."""
    asyncio.run(_serve(settings, worker))

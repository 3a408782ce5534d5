"""`zooserve serve --workers N` (N > 1): N worker processes, each a whole `zooserve serve`
with its own DataPlane (its own ONNX Runtime sessions), sharing the gRPC port and the HTTP
port through SO_REUSEPORT, and one parent process that loads no models.

The parent checks the ports (a port taken, or 0, is settled before any worker starts),
answers the metrics port itself, starts the workers (multiprocessing's spawn context: fresh
interpreters that load the models themselves), waits until every one is listening, logs
one line, and supervises:

- SIGTERM or SIGINT to the parent is forwarded to every worker as SIGTERM. Each drains as a
  single server does (health NOT_SERVING, new requests UNAVAILABLE, those in flight
  answered, then exit 0), and the parent exits 0 once all have. Workers ignore SIGINT
  themselves: Ctrl-C reaches the whole process group, and one SIGTERM from the parent is
  the one way they are told to stop.
- A worker that fails at startup (a port it cannot bind, `--device cuda` without CUDA)
  sends its one-line reason; the parent stops the others and exits non-zero with it.
- A worker that exits while serving is logged with its exit code; the parent stops the
  others (each drains) and exits non-zero. No restarts: an orchestrator restarts the pod.
- A worker whose parent is gone (killed with SIGKILL) sees its pipe close and drains.
- SIGHUP to the parent is passed to every worker, and each looks at the repository again
  (`zooserve.serving.model_control`); `--model-control explicit` needs one worker, since a load or
  unload request reaches only the worker that holds its connection.

What is per worker and what is summed: the kernel hands each new connection to one worker,
and a connection stays with it. The metrics port shows every per-model series summed over
the workers (`metrics.WorkerMetricsSum`: the parent reads each worker's own metrics from a
loopback port at scrape time). The gRPC ModelStatistics RPC is answered by whichever worker
holds the connection, from that worker's own counters: it is per worker, and only the
metrics port is the whole server.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for

from zooserve.serving.cpus import detect_cpu_limit
from zooserve.serving.metrics import WorkerMetricsSum, start_worker_metrics_server
from zooserve.serving.ports import HTTP_PORT, check_port_free
from zooserve.serving.security import Security
from zooserve.serving.settings import Settings

log = logging.getLogger(__name__)

# After the drain timeout, how long a worker may take to close its listeners and exit
# before the parent kills it.
EXIT_GRACE_S = 10.0


# What a worker process runs: `server.serve_worker`, passed in by the server (a module-level
# function, so the spawn context can send it to the new interpreter by name).
ServeWorker = Callable[[Settings, "WorkerLink"], None]


def serve_workers(settings: Settings, security: Security, serve_worker: ServeWorker) -> None:
    """Run `settings.workers` workers, each calling `serve_worker`, until SIGTERM or SIGINT,
    then drain them all (each worker checks `security` again for itself: the parent says
    once what is on). Returns when every worker drained and exited 0; raises SystemExit with
    one line otherwise."""
    if settings.model_control == "explicit":
        # A load or unload request reaches the one worker that holds the connection.
        raise SystemExit(
            "zooserve serve: error: --model-control explicit needs --workers 1: a load or "
            "unload request would reach one worker only; use --model-control poll (or "
            "SIGHUP, which the parent passes to every worker) with several workers")
    limit = detect_cpu_limit()
    if settings.workers > limit.cores:
        log.warning("%d workers on a CPU limit of %s: more workers than cores only makes "
                    "them take turns", settings.workers, limit.describe())
    http_port = HTTP_PORT if settings.http_port is None else settings.http_port
    settings = replace(
        settings,
        grpc_port=check_port_free(settings.host, settings.grpc_port, "gRPC"),
        http_port=check_port_free(settings.host, http_port, "HTTP"),
    )
    log.info(security.describe())  # said once, by the parent
    failure = _Supervisor(settings, serve_worker).run()
    if failure:
        raise SystemExit(f"zooserve serve: error: {failure}")


@dataclass
class WorkerLink:
    """A worker's end of the pipe to its parent."""

    number: int
    connection: Connection

    def ready(self, metrics_port: int) -> None:
        self.connection.send(("ready", os.getpid(), metrics_port))

    def failed(self, reason: str) -> None:
        try:
            self.connection.send(("failed", os.getpid(), reason))
        except OSError:  # the parent is gone
            pass

    def stop_requested(self) -> bool:
        """Whether a SIGTERM came while the server was starting."""
        return _STOP_WHEN_STARTED.is_set()

    def watch_parent(self, loop, on_gone) -> None:
        """Call `on_gone` when the pipe turns readable: the parent sends nothing, so that
        means it exited (its end closed)."""
        fd = self.connection.fileno()

        def gone() -> None:
            loop.remove_reader(fd)
            log.warning("the parent process is gone: draining")
            on_gone()

        loop.add_reader(fd, gone)


def run_worker(settings: Settings, number: int, connection: Connection,
               serve_worker: ServeWorker) -> None:
    """A worker process's entry point (spawned by the parent)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the server takes SIGHUP over
    signal.signal(signal.SIGTERM, _stop_when_started)  # until the server takes SIGTERM over
    logging.basicConfig(
        level=settings.log_level,
        format=f"%(asctime)s %(levelname)s worker {number} (pid {os.getpid()}) "
        "%(name)s: %(message)s",
    )
    from zooserve.serving.onnx_sessions import DeviceUnavailable

    link = WorkerLink(number, connection)
    try:
        serve_worker(settings, link)
    except (OSError, DeviceUnavailable) as exc:
        link.failed(str(exc))
        sys.exit(1)


_STOP_WHEN_STARTED = threading.Event()


def _stop_when_started(signum, frame) -> None:
    # Not an exception: one raised in the middle of loading a model could be taken for a
    # model that failed to load. The server drains as soon as it is listening instead.
    _STOP_WHEN_STARTED.set()


@dataclass
class _Worker:
    number: int
    process: multiprocessing.process.BaseProcess
    connection: Connection
    pid: int = 0
    ready: bool = False
    reason: str = ""  # its own one-line reason, when it failed at startup
    open: bool = True  # the pipe: False once it closed
    exited: bool = False
    metrics_port: int = 0  # its own metrics, on loopback, once it is ready

    def receive(self) -> None:
        """Read what the worker sent, without blocking."""
        try:
            while self.open and self.connection.poll():
                kind, pid, value = self.connection.recv()
                self.pid = pid
                if kind == "ready":
                    self.ready, self.metrics_port = True, value
                elif kind == "failed":
                    self.reason = value
        except (EOFError, OSError):
            self.open = False


class _Supervisor:
    def __init__(self, settings: Settings, serve_worker: ServeWorker) -> None:
        self.settings = settings
        self.serve_worker = serve_worker
        self.view = WorkerMetricsSum()
        self.metrics_port = 0
        self.workers: list[_Worker] = []
        self.stopping = False
        self.failure = ""

    def run(self) -> str:
        """Start, supervise, stop; "" when every worker drained and exited 0, else the
        first failure in one line."""
        previous = {sig: signal.signal(sig, self._on_signal)
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._on_sighup)
        try:
            metrics = start_worker_metrics_server(self.view, self.settings.host,
                                                  self.settings.metrics_port)
            self.metrics_port = metrics.server_port
            try:
                self._start()
                self._supervise()
            finally:
                metrics.shutdown()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.failure:
            pass
        elif len(self.workers) == self.settings.workers:
            log.info("stopped: all %d workers drained and exited 0", len(self.workers))
        else:
            log.info("stopped while starting: %d of %d workers had started, and exited 0",
                     len(self.workers), self.settings.workers)
        return self.failure

    def _start(self) -> None:
        context = multiprocessing.get_context("spawn")
        for number in range(1, self.settings.workers + 1):
            if self.stopping:
                break
            ours, theirs = context.Pipe()
            process = context.Process(
                target=run_worker, args=(self.settings, number, theirs, self.serve_worker),
                name=f"zooserve-worker-{number}")
            process.start()
            theirs.close()
            self.workers.append(_Worker(number, process, ours, pid=process.pid))
        if self.stopping:  # a signal came while starting: tell the ones started since
            self._stop_all()

    def _on_signal(self, signum, frame) -> None:
        if not self.stopping:
            log.info("%s: stopping %d workers", signal.Signals(signum).name, len(self.workers))
        self.stopping = True
        self._stop_all()

    def _on_sighup(self, signum, frame) -> None:
        """Each worker has its own models: every one of them looks at the repository."""
        self._signal_all(signal.SIGHUP)

    def _stop_all(self) -> None:
        self._signal_all(signal.SIGTERM)

    def _signal_all(self, sig: signal.Signals) -> None:
        """`sig` to every worker still running."""
        for worker in self.workers:
            if not worker.exited and worker.process.exitcode is None:
                try:
                    os.kill(worker.process.pid, sig)
                except ProcessLookupError:
                    pass

    def _fail(self, line: str) -> None:
        """The first failure ends the server: log it, stop the others."""
        log.error("%s; stopping the others", line)
        if not self.failure:
            self.failure = line
        self.stopping = True
        self._stop_all()

    def _supervise(self) -> None:
        announced = False
        deadline: float | None = None
        while not all(w.exited for w in self.workers):
            if self.stopping and deadline is None:
                deadline = time.monotonic() + self.settings.drain_timeout + EXIT_GRACE_S
            if deadline is not None and time.monotonic() > deadline:
                self._kill_the_rest()
                break
            waiting = [w.connection for w in self.workers if w.open] + [
                w.process.sentinel for w in self.workers if not w.exited]
            wait_for(waiting, timeout=0.5)
            for worker in self.workers:
                was_ready = worker.ready
                worker.receive()
                if worker.ready and not was_ready:
                    self.view.add_worker(worker.number, worker.metrics_port)
                if not worker.exited and worker.process.exitcode is not None:
                    self._exited(worker)
            if not announced and not self.stopping and all(w.ready for w in self.workers):
                announced = True
                self._announce()

    def _exited(self, worker: _Worker) -> None:
        worker.exited = True
        worker.receive()
        code = worker.process.exitcode
        name = f"worker {worker.number} (pid {worker.pid})"
        if worker.reason:
            self._fail(f"worker {worker.number}: {worker.reason}")
        elif not self.stopping:
            when = "while serving" if worker.ready else "while starting"
            self._fail(f"{name} exited {when} with code {code}")
        elif code == 0:
            log.info("%s exited 0", name)
        elif code == -signal.SIGTERM and not worker.ready:  # before it could take SIGTERM
            log.info("%s stopped before it was ready", name)
        else:
            self._fail(f"{name} exited with code {code} while stopping")

    def _kill_the_rest(self) -> None:
        for worker in self.workers:
            if worker.process.exitcode is None:
                worker.process.kill()
                worker.process.join()
                self._fail(f"worker {worker.number} (pid {worker.pid}) did not stop within "
                           f"{self.settings.drain_timeout + EXIT_GRACE_S:.0f} s; killed")
            worker.exited = True

    def _announce(self) -> None:
        host = self.settings.host
        log.info(
            "ready: %d workers (pids %s) sharing gRPC %s:%d and HTTP %s:%d; metrics of all "
            "on %s:%d",
            len(self.workers), ", ".join(str(w.pid) for w in self.workers),
            host, self.settings.grpc_port, host, self.settings.http_port,
            host, self.metrics_port,
        )

"""Per-model metrics for Prometheus, under Triton's names, read from the same counters the
statistics RPC reports (so the two never disagree). The BentoML service appends them to its
`/metrics`; `zooserve serve` exposes them on their own port (`--metrics-port`, 8002 as
Triton).

prometheus_client writes every counter with a `_total` suffix; Triton's series have none
(`nv_inference_request_success`), and dashboards built for Triton query those exact names.
So the series are exposed untyped under Triton's names: Prometheus scrapes and `rate()`s
them all the same.

With `--workers N` each worker serves its own series on a loopback port only the parent
knows, and the parent alone answers the metrics port, with `WorkerMetricsSum`: every series
summed over the workers, read at scrape time. A worker that does not answer within
WORKER_SCRAPE_TIMEOUT_S does not fail the scrape: its last values stand in (so the sums
never go backwards, which Prometheus would take for a counter reset), and
`zooserve_worker_metrics_fresh{worker="i"}` is 0 for it in that scrape, 1 otherwise."""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from typing import TYPE_CHECKING
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import GaugeMetricFamily, Metric, UntypedMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

if TYPE_CHECKING:  # the workers' parent imports this module and loads no models
    from zooserve.serving.dataplane import DataPlane
    from zooserve.serving.statistics import StatisticsSnapshot

log = logging.getLogger(__name__)

# How long a scrape of the parent waits for the workers' own metrics.
WORKER_SCRAPE_TIMEOUT_S = 2.0
FRESH_SERIES = "zooserve_worker_metrics_fresh"

LABELS = ["model", "version"]


@dataclass(frozen=True)
class Series:
    name: str
    help: str
    value: Callable[[StatisticsSnapshot], float]


SERIES = [
    Series("nv_inference_request_success", "Number of successful inference requests",
           lambda s: s.success.count),
    Series("nv_inference_request_failure", "Number of failed inference requests",
           lambda s: s.fail.count),
    Series("nv_inference_count", "Number of inferences performed (a batch of n counts n)",
           lambda s: s.inference_count),
    Series("nv_inference_exec_count", "Number of model executions performed",
           lambda s: s.execution_count),
    Series("nv_inference_request_duration_us",
           "Cumulative duration of successful inference requests, in microseconds",
           lambda s: s.success.ns / 1000),
    Series("nv_inference_queue_duration_us",
           "Cumulative time requests waited before running, in microseconds",
           lambda s: s.queue.ns / 1000),
    Series("nv_inference_compute_input_duration_us",
           "Cumulative time preparing model inputs, in microseconds",
           lambda s: s.compute_input.ns / 1000),
    Series("nv_inference_compute_infer_duration_us",
           "Cumulative time running the model, in microseconds",
           lambda s: s.compute_infer.ns / 1000),
    Series("nv_inference_compute_output_duration_us",
           "Cumulative time collecting model outputs, in microseconds",
           lambda s: s.compute_output.ns / 1000),
]  # fmt: skip


# Requests a model has taken on and not answered: what an autoscaler or a drain watches.
IN_FLIGHT_SERIES = "zooserve_inference_requests_in_flight"


class ModelMetrics(Collector):
    """A Prometheus collector that reads the DataPlane's per-model statistics at scrape
    time: one series per model version for each of SERIES, and the gauge of its requests in
    flight."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    def collect(self) -> Iterator[Metric]:
        rows = self.dataplane.statistics()
        for series in SERIES:
            family = UntypedMetricFamily(series.name, series.help, labels=LABELS)
            for model, snapshot in rows:
                family.add_metric([model.name, str(model.version)], series.value(snapshot))
            yield family
        in_flight = GaugeMetricFamily(
            IN_FLIGHT_SERIES,
            "Inference requests taken on and not yet answered (waiting in the queue or running)",
            labels=LABELS,
        )
        for model, _ in rows:
            in_flight.add_metric([model.name, str(model.version)], self.dataplane.in_flight(model))
        yield in_flight


def registry_for(dataplane: DataPlane) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ModelMetrics(dataplane))
    return registry


def exposition(dataplane: DataPlane) -> str:
    """The metrics in Prometheus' text format."""
    return generate_latest(registry_for(dataplane)).decode("utf-8")


def start_metrics_server(
    dataplane: DataPlane, host: str, port: int, quiet: bool = False
) -> WSGIServer:
    """Serve the metrics over HTTP on host:port (any path answers); returns the server,
    whose `server_port` is the port really bound and whose `shutdown()` stops it.
    `quiet`: no log line (a worker's internal port, which only its parent reads)."""
    return _serve_registry(registry_for(dataplane), host, port, quiet)


def start_worker_metrics_server(view: WorkerMetricsSum, host: str, port: int) -> WSGIServer:
    """Serve the sum over the workers on host:port, as `start_metrics_server` serves one."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(view)
    return _serve_registry(registry, host, port)


def _serve_registry(registry: CollectorRegistry, host: str, port: int,
                    quiet: bool = False) -> WSGIServer:
    try:
        server, _ = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise OSError(f"cannot listen for metrics on {host}:{port}: {exc.strerror}") from None
    if not quiet:
        log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server


class WorkerMetricsSum(Collector):
    """The metrics of several workers as one: at each scrape, every worker's metrics port
    (on loopback) is read at once, and each series is summed over the workers by name and
    labels. A worker that does not answer within `timeout_s` keeps its last values in the
    sum and is marked not fresh (see the module's docstring)."""

    def __init__(self, timeout_s: float = WORKER_SCRAPE_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._lock = threading.Lock()
        self._ports: dict[int, int] = {}  # worker number -> its loopback metrics port
        self._last: dict[int, list[Metric]] = {}  # worker number -> its last answer
        self._readers = ThreadPoolExecutor(thread_name_prefix="worker-metrics")

    def add_worker(self, worker: int, port: int) -> None:
        with self._lock:
            self._ports[worker] = port

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            ports = dict(self._ports)
        reads = {w: self._readers.submit(_read_metrics, port, self.timeout_s)
                 for w, port in ports.items()}
        wait_for(reads.values(), timeout=self.timeout_s)
        fresh = UntypedMetricFamily(
            FRESH_SERIES,
            "1 if this scrape read the worker's metrics, 0 if the worker did not answer in "
            "time and its last values are in the sums",
            labels=["worker"],
        )
        with self._lock:
            for worker, read in sorted(reads.items()):
                answered = read.done() and read.exception() is None
                if answered:
                    self._last[worker] = read.result()
                else:
                    log.warning("metrics: worker %d did not answer within %.0f s (%s); its "
                                "last values stand in", worker, self.timeout_s,
                                read.exception() if read.done() else "still waiting")
                fresh.add_metric([str(worker)], 1.0 if answered else 0.0)
            answers = [self._last[w] for w in sorted(self._last)]
        yield from _summed(answers)
        yield fresh


def _read_metrics(port: int, timeout_s: float) -> list[Metric]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as reply:
        text = reply.read().decode("utf-8")
    return list(text_string_to_metric_families(text))


def _summed(answers: list[list[Metric]]) -> Iterator[Metric]:
    """One family per name, each sample the sum of that sample (name and labels) over the
    answers, in the order they first appear."""
    families: dict[str, Metric] = {}
    totals: dict[str, dict[tuple, float]] = {}
    for answer in answers:
        for family in answer:
            if family.name not in families:
                families[family.name] = Metric(family.name, family.documentation, family.type)
                totals[family.name] = {}
            for sample in family.samples:
                key = (sample.name, tuple(sample.labels.items()))
                totals[family.name][key] = totals[family.name].get(key, 0.0) + sample.value
    for name, family in families.items():
        for (sample_name, labels), value in totals[name].items():
            family.add_sample(sample_name, dict(labels), value)
        yield family

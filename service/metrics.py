"""Per-model metrics for Prometheus, under Triton's names, read from the same counters the
statistics RPC reports (so the two never disagree). The BentoML service appends them to its
`/metrics`; `zooserve serve` exposes them on their own port (`--metrics-port`, 8002 as
Triton).

prometheus_client writes every counter with a `_total` suffix; Triton's series have none
(`nv_inference_request_success`), and dashboards built for Triton query those exact names.
So the series are exposed untyped under Triton's names: Prometheus scrapes and `rate()`s
them all the same."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.metrics_core import Metric, UntypedMetricFamily
from prometheus_client.registry import Collector

from service.dataplane import DataPlane
from service.statistics import StatisticsSnapshot

log = logging.getLogger(__name__)

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


class ModelMetrics(Collector):
    """A Prometheus collector that reads the DataPlane's per-model statistics at scrape
    time: one series per model version for each of SERIES."""

    def __init__(self, dataplane: DataPlane) -> None:
        self.dataplane = dataplane

    def collect(self) -> Iterator[Metric]:
        rows = self.dataplane.statistics()
        for series in SERIES:
            family = UntypedMetricFamily(series.name, series.help, labels=LABELS)
            for model, snapshot in rows:
                family.add_metric([model.name, str(model.version)], series.value(snapshot))
            yield family


def registry_for(dataplane: DataPlane) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ModelMetrics(dataplane))
    return registry


def exposition(dataplane: DataPlane) -> str:
    """The metrics in Prometheus' text format."""
    return generate_latest(registry_for(dataplane)).decode("utf-8")


def start_metrics_server(dataplane: DataPlane, host: str, port: int) -> WSGIServer:
    """Serve the metrics over HTTP on host:port (any path answers); returns the server,
    whose `server_port` is the port really bound and whose `shutdown()` stops it."""
    try:
        server, _ = start_http_server(port, addr=host, registry=registry_for(dataplane))
    except OSError as exc:
        raise OSError(f"cannot listen for metrics on {host}:{port}: {exc.strerror}") from None
    log.info("metrics on http://%s:%d/metrics", host, server.server_port)
    return server

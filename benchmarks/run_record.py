"""What one benchmark run collects (`Run`), and what both the measuring (`benchmarks.run`) and
the report (`benchmarks.report`) name: the table rows' labels, the headline points, where
perf_analyzer lives, and the median-and-range every figure is summarised with."""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import systems

ROOT = systems.ROOT
PERF_ANALYZER = Path(os.environ.get("PERF_ANALYZER", ROOT.parent / "shared/tools/perf_analyzer"))
# (model, concurrency) points also loaded by tritonclient.grpc.aio, the client others wrote
HEADLINE = [("penguins", 8), ("digits", 32)]


@dataclass
class Run:
    args: argparse.Namespace
    started: float = field(default_factory=time.monotonic)
    points: list[dict] = field(default_factory=list)          # one per round/row/model/c
    floors: list[dict] = field(default_factory=list)          # raw ORT, one per round
    starts: list[dict] = field(default_factory=list)          # server start times
    unavailable: dict[str, str] = field(default_factory=dict)  # row -> why not
    perf_analyzer: list[dict] = field(default_factory=list)
    install: dict | None = None
    versions: dict[str, dict[str, str]] = field(default_factory=dict)

    def log(self, message: str) -> None:
        elapsed = time.monotonic() - self.started
        print(f"[{elapsed:6.0f}s] {message}", flush=True)


ROW_LABELS = {
    ("bare", "unary"): "bare grpc.aio server (floor)",
    ("zooserve", "unary"): "zooserve gRPC unary",
    ("zooserve", "stream"): "zooserve gRPC stream",
    ("zooserve-w2", "unary"): "zooserve gRPC unary, --workers 2 (up to 8 connections)",
    ("bento", "http"): "zooserve BentoML HTTP",
    ("triton", "unary"): "Triton (pytriton), no batching",
    ("triton-batch", "unary"): "Triton (pytriton), dynamic batching",
    ("kserve", "unary"): "KServe ModelServer",
    ("mlserver", "unary"): "MLServer",
}


def median_range(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max) of the values that are numbers (None and NaN left out); NaN each
    when none are."""
    values = [v for v in values if v is not None and v == v]
    if not values:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(values), min(values), max(values)

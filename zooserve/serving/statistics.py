"""Per-model counters of successes, failures and where the time went, as Triton's
statistics extension reports them. Updated from worker threads, read by any frontend."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


@dataclass
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass
class BatchDurations:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass
class StatisticsSnapshot:
    last_inference_ms: int
    inference_count: int
    execution_count: int
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    batches: dict[int, BatchDurations]


class ModelStatistics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_inference_ms = 0
        self._inference_count = 0
        self._execution_count = 0
        self._success = Duration()
        self._fail = Duration()
        self._queue = Duration()
        self._input = Duration()
        self._infer = Duration()
        self._output = Duration()
        self._batches: dict[int, BatchDurations] = {}

    def record_execution(self, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One run of the model over `rows` rows (a batch of one or more requests): where
        its time went, under its batch size (Triton's batch statistics)."""
        with self._lock:
            self._count_execution(rows, input_ns, infer_ns, output_ns)

    def record_success(self, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        """One request answered, from its arrival to its encoded response: waiting for its
        batch, decoding and checking its inputs (and its share of stacking the batch), the
        run it was part of, splitting and encoding its outputs. The four add up to the
        request's time in the server, so perf_analyzer's breakdown adds up too."""
        with self._lock:
            self._count_success(queue_ns, input_ns, infer_ns, output_ns)

    def _count_execution(self, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self._inference_count += rows
        self._execution_count += 1
        batch = self._batches.get(rows)
        if batch is None:
            batch = self._batches[rows] = BatchDurations()
        batch.compute_input.add(input_ns)
        batch.compute_infer.add(infer_ns)
        batch.compute_output.add(output_ns)

    def _count_success(self, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self._last_inference_ms = time.time_ns() // 1_000_000
        self._success.add(queue_ns + input_ns + infer_ns + output_ns)
        self._queue.add(queue_ns)
        self._input.add(input_ns)
        self._infer.add(infer_ns)
        self._output.add(output_ns)

    def record_failure(self, ns: int) -> None:
        with self._lock:
            self._fail.add(ns)

    def snapshot(self) -> StatisticsSnapshot:
        with self._lock:
            copy = lambda d: Duration(d.count, d.ns)  # noqa: E731
            return StatisticsSnapshot(
                last_inference_ms=self._last_inference_ms,
                inference_count=self._inference_count,
                execution_count=self._execution_count,
                success=copy(self._success),
                fail=copy(self._fail),
                queue=copy(self._queue),
                compute_input=copy(self._input),
                compute_infer=copy(self._infer),
                compute_output=copy(self._output),
                batches={
                    size: BatchDurations(
                        copy(b.compute_input), copy(b.compute_infer), copy(b.compute_output)
                    )
                    for size, b in sorted(self._batches.items())
                },
            )

"""Triton's HTTP extensions beyond the core verbs, as JSON in the shapes Triton's HTTP server
answers and `tritonclient.http` reads: the model configuration (`/config`, built by
`zooserve.serving.model_config`, which the gRPC frontend shares), the statistics (`/stats`) and the
repository index (`/v2/repository/index`). The HTTP side needs neither protobuf nor the
generated modules."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zooserve.serving.loaded_model import LoadedModel
from zooserve.serving.repository import IndexEntry
from zooserve.serving.statistics import Duration, StatisticsSnapshot


def _duration(d: Duration) -> dict[str, int]:
    return {"count": d.count, "ns": d.ns}


_NONE = Duration()


def model_statistics(rows: Sequence[tuple[LoadedModel, StatisticsSnapshot]]) -> dict[str, Any]:
    """Triton's statistics extension: every counter, zeros included, as Triton's HTTP server
    writes them. zooserve has no response cache, so its cache counters stay zero."""
    return {
        "model_stats": [
            {
                "name": model.name,
                "version": str(model.version),
                "last_inference": s.last_inference_ms,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": {
                    "success": _duration(s.success),
                    "fail": _duration(s.fail),
                    "queue": _duration(s.queue),
                    "compute_input": _duration(s.compute_input),
                    "compute_infer": _duration(s.compute_infer),
                    "compute_output": _duration(s.compute_output),
                    "cache_hit": _duration(_NONE),
                    "cache_miss": _duration(_NONE),
                },
                "batch_stats": [
                    {
                        "batch_size": size,
                        "compute_input": _duration(b.compute_input),
                        "compute_infer": _duration(b.compute_infer),
                        "compute_output": _duration(b.compute_output),
                    }
                    for size, b in s.batches.items()
                ],
            }
            for model, s in rows
        ]
    }


def repository_index(rows: Sequence[IndexEntry], ready_only: bool) -> list[dict[str, str]]:
    """Triton's repository index: every model version found, with its state and why."""
    return [
        {"name": r.name, "version": str(r.version), "state": r.state, "reason": r.reason}
        for r in rows
        if r.state == "READY" or not ready_only
    ]

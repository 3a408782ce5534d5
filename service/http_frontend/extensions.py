"""Triton's HTTP extensions beyond the core verbs, as JSON in the shapes Triton's HTTP server
answers and `tritonclient.http` reads: the model configuration (`/config`), the statistics
(`/stats`) and the repository index (`/v2/repository/index`).

The model configuration is built here from the core's objects, not from the gRPC frontend's
ModelConfig message, so the HTTP side needs neither protobuf nor the generated modules. It
carries the same content as service/grpc_frontend/messages.py `model_config`, field for
field, under the protobuf field names, with the difference Triton's own HTTP answer has:
64-bit integers are JSON numbers, not strings. tests/test_tritonclient_http.py compares the
two answers from one server, so they cannot drift apart unnoticed."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from service.repository import IndexEntry
from service.runtime import PLATFORM, LoadedModel, TensorSpec
from service.statistics import Duration, StatisticsSnapshot


def _config_datatype(datatype: str) -> str:
    return "TYPE_STRING" if datatype == "BYTES" else f"TYPE_{datatype}"


def _dims(model: LoadedModel, spec: TensorSpec) -> list[int]:
    # Triton's convention: with batching, dims leave out the batch axis.
    return list(spec.shape[1:] if model.max_batch_size > 0 else spec.shape)


def _tensor(model: LoadedModel, spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "data_type": _config_datatype(spec.datatype),
            "dims": _dims(model, spec)}


def model_config(model: LoadedModel) -> dict[str, Any]:
    """Triton's model configuration for a loaded model version (see the module's note)."""
    on_gpu = model.device == "GPU"
    parameters = {
        "execution_providers": ",".join(model.providers),
        "intra_op_thread_count": str(model.intra_op_threads),
        "inter_op_thread_count": str(model.inter_op_threads),
        "task": model.task,
        "max_queue_size": str(model.max_queue_size),
        "execution": "inline" if model.runs_inline(1) else "thread",
        "description": str(model.card.get("description", "")),
    }
    if model.labels:
        parameters["labels"] = json.dumps(model.labels)
    group: dict[str, Any] = {
        "name": model.name,
        "count": model.config.instances,
        "kind": "KIND_GPU" if on_gpu else "KIND_CPU",
    }
    if on_gpu:
        group["gpus"] = [0]
    config: dict[str, Any] = {
        "name": model.name,
        "platform": PLATFORM,
        "backend": "onnxruntime",
        "version_policy": {"all": {}},
        "max_batch_size": model.max_batch_size,
        "input": [_tensor(model, s) for s in model.inputs],
        "output": [_tensor(model, s) for s in model.outputs],
        "instance_group": [group],
        "default_model_filename": model.path.name,
        "parameters": {k: {"string_value": v} for k, v in parameters.items()},
    }
    if model.max_batch_size:  # a model the batcher batches (its first axis is free)
        config["dynamic_batching"] = {
            "preferred_batch_size": list(model.preferred_batch_sizes),
            "max_queue_delay_microseconds":
                model.config.dynamic_batching.max_queue_delay_us,
            "default_queue_policy": {"max_queue_size": model.max_queue_size},
        }
    return config


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

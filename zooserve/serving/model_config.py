"""Triton's model configuration of a loaded model version, as plain data: the JSON Triton's
HTTP server answers at `/v2/models/<name>/config`, under the protobuf field names. The HTTP
frontend answers it as it is; the gRPC frontend reads it into its ModelConfig message
(`json_format.ParseDict`), so the two cannot drift apart.

Where the model runs is in the instance group's kind (KIND_GPU only when the CUDA provider is
really in use, read back from the session) and in the `execution_providers` parameter; the
thread counts use the parameter names of Triton's ONNX Runtime backend. ModelMetadata has no
field for any of it, in Triton's protocol as in ours."""

from __future__ import annotations

import json
from typing import Any

from zooserve.serving.inline_runs import runs_inline
from zooserve.serving.loaded_model import LoadedModel, TensorSpec


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
        "execution": "inline" if runs_inline(model, 1) else "thread",
        "description": str(model.card.get("description", "")),
    }
    if model.labels:
        parameters["labels"] = json.dumps(model.labels)
    parameters.update(model.config_parameters())
    feature_names = model.card.get("feature_names")
    if feature_names:  # what each column of the input is, in order (a client matches a table)
        parameters["feature_names"] = json.dumps([str(name) for name in feature_names])
    group: dict[str, Any] = {
        "name": model.name,
        "count": model.config.instances,
        "kind": "KIND_GPU" if on_gpu else "KIND_CPU",
    }
    if on_gpu:
        group["gpus"] = [0]
    config: dict[str, Any] = {
        "name": model.name,
        "platform": model.platform,
        "backend": model.backend,
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

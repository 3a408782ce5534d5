"""How one model is served, read from `<repository>/<name>/serving.json` beside its version
folders (the repository's layout is `zooserve.repository.layout`). Every key is optional:

    {
      "dynamic_batching": {
        "max_queue_delay_us": 2000,        # wait this long for a batch to fill (0: never wait)
        "preferred_batch_sizes": [32],     # stop waiting once this many rows are queued
        "max_batch_size": 64               # rows in one run (defaults to the server's limit)
      },
      "max_queue_size": 256,               # waiting to run at once (default: --max-queue-size)
      "instances": 1,                      # batches of this model running at once
      "intra_op_threads": 2,               # this model's own ONNX Runtime pool (default: shared)
      "execution": "auto"                  # inline | thread | auto (chosen from the warm-up)
    }

A model whose tensors all have a free first axis is batched whether or not the file exists:
without a delay, requests that queue while the model runs go into its next run together. A
file that cannot be read keeps the model from loading, with the reason, like a broken model
file."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from zooserve.repository.layout import SERVING_FILE

EXECUTIONS = ("auto", "inline", "thread")
DEFAULT_MAX_QUEUE_SIZE = 256


class ServingConfigError(ValueError):
    """serving.json cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class DynamicBatching:
    max_queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()
    max_batch_size: int | None = None  # None: the server's --max-batch-size


@dataclass(frozen=True)
class ServingConfig:
    dynamic_batching: DynamicBatching = field(default_factory=DynamicBatching)
    # Requests taken on and not yet running (being read, decoded or queued): the next one
    # beyond it is refused. None: the server's --max-queue-size.
    max_queue_size: int | None = None
    instances: int = 1
    intra_op_threads: int | None = None  # None: the process-wide pool every model shares
    execution: str = "auto"


def read_serving_config(model_dir: Path) -> ServingConfig:
    """The model's serving.json, or the defaults when it has none."""
    path = model_dir / SERVING_FILE
    if not path.exists():
        return ServingConfig()
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServingConfigError(f"{path}: not readable JSON: {exc}") from None
    return parse_serving_config(data, str(path))


def parse_serving_config(data: object, where: str = SERVING_FILE) -> ServingConfig:
    top = _object(data, where)
    _only(top, {"dynamic_batching", "max_queue_size", "instances", "intra_op_threads",
                "execution"}, where)
    batching = _object(top.get("dynamic_batching", {}), f"{where}: dynamic_batching")
    _only(batching, {"max_queue_delay_us", "preferred_batch_sizes", "max_batch_size"},
          f"{where}: dynamic_batching")
    preferred = batching.get("preferred_batch_sizes", [])
    if not isinstance(preferred, list):
        raise ServingConfigError(
            f"{where}: dynamic_batching.preferred_batch_sizes must be a list of numbers"
        )
    max_batch = batching.get("max_batch_size")
    config = ServingConfig(
        dynamic_batching=DynamicBatching(
            max_queue_delay_us=_whole(batching, "max_queue_delay_us", 0, where, minimum=0,
                                      maximum=10_000_000),
            preferred_batch_sizes=tuple(
                sorted(
                    _number(size, f"dynamic_batching.preferred_batch_sizes[{i}]", where, 1)
                    for i, size in enumerate(preferred)
                )
            ),
            max_batch_size=None
            if max_batch is None
            else _number(max_batch, "dynamic_batching.max_batch_size", where, 1),
        ),
        max_queue_size=None
        if "max_queue_size" not in top
        else _number(top["max_queue_size"], "max_queue_size", where, 1),
        instances=_whole(top, "instances", 1, where, minimum=1, maximum=64),
        intra_op_threads=None
        if top.get("intra_op_threads") is None
        else _number(top["intra_op_threads"], "intra_op_threads", where, 1, 1024),
        execution=top.get("execution", "auto"),
    )
    if config.execution not in EXECUTIONS:
        raise ServingConfigError(
            f"{where}: execution must be one of {', '.join(EXECUTIONS)}, "
            f"got {config.execution!r}"
        )
    limit = config.dynamic_batching.max_batch_size
    preferred = config.dynamic_batching.preferred_batch_sizes
    if limit is not None and any(size > limit for size in preferred):
        raise ServingConfigError(
            f"{where}: dynamic_batching.preferred_batch_sizes {list(preferred)} "
            f"exceed max_batch_size {limit}"
        )
    return config


def _object(value: object, where: str) -> Mapping:
    if not isinstance(value, dict):
        raise ServingConfigError(f"{where}: expected a JSON object, got {type(value).__name__}")
    return value


def _only(values: Mapping, known: set[str], where: str) -> None:
    unknown = sorted(set(values) - known)
    if unknown:
        raise ServingConfigError(
            f"{where}: unknown key {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(known))}"
        )


def _whole(values: Mapping, key: str, default: int, where: str, minimum: int,
           maximum: int = 1_000_000) -> int:
    if key not in values:
        return default
    return _number(values[key], key, where, minimum, maximum)


def _number(value: object, key: str, where: str, minimum: int, maximum: int = 1_000_000) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ServingConfigError(
            f"{where}: {key} must be a whole number from {minimum} to {maximum}, got {value!r}"
        )
    return value

"""Whether a run is made on the event loop that received its request or handed to an
inference thread. A model knows only what its runs cost (measured at warm-up) and the limit
it was loaded with; this rule decides, and the batcher, the DataPlane, the model
configuration and the repository's log line all read it from here."""

from __future__ import annotations

from typing import Protocol

from zooserve.serving.serving_config import ServingConfig

# A run cheaper than this is made on the event loop that received the request: handing it
# to a thread and back costs the loop more than the run itself (issue 8's profile: the
# hand-off was 19% of the server's time on the tiny model, ONNX Runtime 1%).
INLINE_BELOW_NS = 150_000
# Below 4 cores there is no core to spare for a run beside the event loop and gRPC's own
# threads, so a hand-off buys no overlap, only its cost and a second thread contending for
# the GIL: runs are made inline up to this budget, which bounds how long the loop (health
# checks included) is held (docs/serving.md says how to compare the two on a machine).
INLINE_BUDGET_FEW_CORES_NS = 20_000_000


class MeasuredModel(Protocol):
    """What the rule reads of a model: its serving.json, its device, what its runs cost and
    the limit it was loaded with (`LoadedModel` has them all)."""

    config: ServingConfig
    device: str
    run_ns: int
    inline_below_ns: int

    def estimate_ns(self, rows: int) -> int: ...


def inline_limit(cores: int) -> int:
    """The estimated run time below which a run stays on the event loop, for a process with
    this CPU limit (see `runs_inline`)."""
    return INLINE_BUDGET_FEW_CORES_NS if cores < 4 else INLINE_BELOW_NS


def runs_inline(model: MeasuredModel, rows: int) -> bool:
    """Whether a run of this many rows of `model` is made on the event loop rather than a
    thread: `execution` in its serving.json, or (auto) when its warm-up says the run is
    cheaper than the hand-off. A model whose warm-up was not timed, or that runs on a GPU,
    runs on a thread."""
    if model.config.execution != "auto":
        return model.config.execution == "inline"
    if not model.run_ns or model.device == "GPU":
        return False
    return model.estimate_ns(rows) < model.inline_below_ns

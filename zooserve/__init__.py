"""The `zooserve` command: the front door to training (zooserve/training/) and serving
(zooserve/serving/).

`zooserve.Client` and `zooserve.AsyncClient` ask a running server for predictions and
library searches (the package zooserve/client/); they are imported on first use, so
`import zooserve` and the command stay light."""

from __future__ import annotations

_CLIENT_NAMES = frozenset({"AsyncClient", "Client", "ClientError", "Match", "ModelEntry",
                           "ModelInfo", "Prediction", "SearchResults", "TensorInfo"})


def __getattr__(name: str):
    if name in _CLIENT_NAMES:
        from zooserve import client

        return getattr(client, name)
    raise AttributeError(f"module 'zooserve' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _CLIENT_NAMES)

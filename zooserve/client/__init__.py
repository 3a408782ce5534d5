"""`zooserve.Client`: predictions from a zooserve (or any Open Inference Protocol v2) server,
in labels, for people who want answers rather than tensors.

```python
import zooserve

with zooserve.Client("localhost:8001") as client:
    result = client.predict("penguins", [[39.1, 18.7, 181, 3750]])
    result.predicted()  # ['Adelie']
    result.to_frame()   # a DataFrame, one column per label
```

The input can be a numpy array, a nested list, a pandas DataFrame (its columns matched by
name to the model's `feature_names` and put in the card's order) or, for a model with several
inputs, a dict {input name: array}. The datatype comes from the model's metadata, which the
client asks for once per (model, version) and keeps: every later `predict` is one ModelInfer
call. A call that fails with NOT_FOUND, INVALID_ARGUMENT or FAILED_PRECONDITION (or a
mistake found in the client) drops what was kept, so a model reloaded with another
signature is asked for again.

Every failure is a `ClientError`: `.code` is the gRPC status name (None for a mistake found
before anything was sent) and the message is the server's own, or one line saying what is
wrong.

`search` asks a spectral library (a search model) for the entries most like some query
spectra: an MGF file, `zooserve.spectra.mgf.Spectrum`s or dicts of peaks go in,
`SearchResults` come out (`Match`es per query, best first, with each entry's metadata).

```python
with zooserve.Client("localhost:8001") as client:
    results = client.search("spectra_search", "queries.mgf", top_k=5)
    results.matches[0][0].id  # the best match of the first query
    print(results.describe())
```

`AsyncClient` has the same methods as coroutines over `grpc.aio`. Both share every step
between the wire and the caller: each method is written once, as a generator that yields
the RPCs it needs (`_Call`) and gets their answers back; the two clients only differ in how
they send an RPC (`Client._drive` and `AsyncClient._drive`, both around `_Run`).

The package, by concern: `driver` (the two clients, the channel, TLS and the token),
`results` (what comes back: Prediction, ModelInfo, SearchResults, ...), `inference` (a
prediction's request and answer, DataFrames included) and `search` (query spectra, checked
by zooserve.spectra.peaks, into requests, and answers into matches); none does I/O but the
driver.

Needs numpy, grpcio and protobuf (`pip install 'zooserve[client]'`), pandas only for
DataFrames and `to_frame()`; nothing of the server (ONNX Runtime) is imported."""

from __future__ import annotations

from zooserve.client.driver import AsyncClient, Client
from zooserve.client.inference import infer_request as _infer_request  # noqa: F401
from zooserve.client.inference import prediction as _prediction  # noqa: F401
from zooserve.client.results import (
    ClientError,
    Match,
    ModelEntry,
    ModelInfo,
    Prediction,
    SearchResults,
    TensorInfo,
)

__all__ = ["AsyncClient", "Client", "ClientError", "Match", "ModelEntry", "ModelInfo",
           "Prediction", "SearchResults", "TensorInfo"]
# `_infer_request` and `_prediction` (a prediction's request and answer, no I/O) are named
# here too for the in-process checks that feed or time them (tests/test_grpc_client.py,
# benchmarks/client_overhead.py).

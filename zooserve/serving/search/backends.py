"""Nearest-neighbour search over a spectral library, behind one interface.

A library is N reference embeddings (float32 [N, D], rows L2-normalised), kept as a memory-mapped
`.npy` file, plus the precursor m/z of each entry (float64 [N], NaN where unknown). A query batch
is float32 [B, D], rows L2-normalised, and the score is the inner product (the cosine). Three
backends answer the same `search`:

- `ExactBackend`: numpy brute force on the memory map. Always right; the reference the others
  are measured against, and the one that answers precursor windows (a narrow slice of the
  library, cheaper to score outright than to filter in a graph).
- `FaissBackend` (extra `ann`): a faiss HNSW graph for large libraries; used only where the
  library build measured its recall against exact search (`measure_recall`, `ANN_MIN_RECALL`).
- `QdrantBackend` (extra `qdrant`): a Qdrant collection, for libraries that outgrow one machine.

All return the k best per query, ordered by score descending and then by row number ascending,
so that backends that find the same entries return them in the same order. This module imports
with numpy alone: faiss and qdrant_client are imported where they are needed, and their absence
raises `BackendUnavailable` naming the extra to install.

Each backend has its module (`exact`, `ann`, `qdrant`) beside the contract they keep
(`backend_protocol`); this one gathers them under one name, with what compares them: recall
against exact search (`measure_recall`) and the bar an ANN index must reach (`ANN_MIN_RECALL`).
"""

from __future__ import annotations

import numpy as np

from zooserve.serving.search.ann import (
    FaissBackend,
    build_faiss_index,
    load_faiss_index,
    save_faiss_index,
)
from zooserve.serving.search.backend_protocol import BackendUnavailable, Matches, SearchBackend
from zooserve.serving.search.exact import ExactBackend
from zooserve.serving.search.qdrant import QdrantBackend, open_qdrant, upload_to_qdrant

__all__ = [
    "ANN_MIN_RECALL",
    "BackendUnavailable",
    "ExactBackend",
    "FaissBackend",
    "Matches",
    "QdrantBackend",
    "SearchBackend",
    "build_faiss_index",
    "load_faiss_index",
    "measure_recall",
    "open_qdrant",
    "save_faiss_index",
    "upload_to_qdrant",
]

# The library build serves an ANN index only where its recall@10 against exact search reaches
# this; below it, exact search answers (slower, never wrong).
ANN_MIN_RECALL = 0.99


def measure_recall(
    backend: SearchBackend,
    exact: ExactBackend,
    embeddings: np.ndarray,
    sample: int = 1000,
    k: int = 10,
    seed: int = 0,
) -> float:
    """Recall@k of `backend` against exact search: the mean over queries of the share of the
    exact top k that `backend` also returns, the queries being `sample` library rows drawn
    with `seed`. The library build serves an ANN index only where this is >= ANN_MIN_RECALL.
    (With fewer than k entries in the library the share is of the min(k, N) there are.)"""
    n = embeddings.shape[0]
    if n == 0:
        return 1.0
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(int(sample), n), replace=False))
    hits = 0
    for start in range(0, rows.size, 256):
        q = np.asarray(embeddings[rows[start : start + 256]], dtype=np.float32)
        got = backend.search(q, k).indices
        want = exact.search(q, k).indices
        same = (got[:, :, None] == want[:, None, :]) & (want[:, None, :] >= 0)
        hits += int(same.any(axis=2).sum())
    return hits / (rows.size * min(k, n))

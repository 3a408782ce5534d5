"""Approximate search with faiss (extra `ann`): an HNSW index built, saved and loaded, and
`FaissBackend`, which answers from it and hands queries with a precursor window to exact
search. faiss is imported when first needed; its absence raises `BackendUnavailable`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from zooserve.serving.search.backend_protocol import (
    BackendBase,
    BackendUnavailable,
    padded_results,
    plain_and_windowed,
    sort_rows,
)
from zooserve.serving.search.exact import ExactBackend

if TYPE_CHECKING:
    import faiss


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError as exc:
        raise BackendUnavailable(
            "approximate search needs faiss: pip install 'zooserve[ann]'"
        ) from exc
    return faiss


def build_faiss_index(
    embeddings: np.ndarray, m: int = 32, ef_construction: int = 200, ef_search: int = 128
) -> faiss.IndexHNSWFlat:
    """An HNSW graph (faiss `IndexHNSWFlat`, inner product) over `embeddings`, added in blocks
    so a memory-mapped library is read once and never copied whole as float32 beyond the
    index's own copy of the vectors (which it needs: N x D x 4 bytes plus the graph)."""
    faiss = _import_faiss()
    n, d = embeddings.shape
    index = faiss.IndexHNSWFlat(int(d), int(m), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(ef_construction)
    index.hnsw.efSearch = int(ef_search)
    for start in range(0, n, 65536):
        index.add(np.ascontiguousarray(embeddings[start : start + 65536], dtype=np.float32))
    return index


def save_faiss_index(index: faiss.Index, path: str | Path) -> None:
    """Write the index to `path` (faiss's own format)."""
    _import_faiss().write_index(index, str(path))


def load_faiss_index(path: str | Path, ef_search: int = 128) -> faiss.Index:
    """Read an index written by `save_faiss_index`; efSearch is not what the file kept but
    `ef_search`, the serving setting."""
    index = _import_faiss().read_index(str(path))
    faiss_hnsw = getattr(index, "hnsw", None)
    if faiss_hnsw is not None:
        faiss_hnsw.efSearch = int(ef_search)
    return index


class FaissBackend(BackendBase):
    """Approximate search in a faiss HNSW index whose ids are library row numbers.

    A query with a precursor window goes to `exact` instead, scoring only the entries inside
    the window: windows are narrow (a few m/z, a small slice of the library), so that is both
    cheaper and exact, where filtering a graph search would need it to look much further.
    `min_score` only removes entries, so it filters the HNSW results afterwards.

    Creating one sets faiss's OpenMP threads to 1 for the whole process: the server runs
    several inference threads itself, and OpenMP teams inside each of them would oversubscribe
    the cores (and small searches gain nothing from them). `exact` is borrowed, not closed."""

    kind = "ann"

    def __init__(
        self, index: faiss.Index, precursor_mz: np.ndarray, exact: ExactBackend
    ) -> None:
        faiss = _import_faiss()
        faiss.omp_set_num_threads(1)
        n = np.shape(precursor_mz)[0]
        if not (index.ntotal == n == exact.count) or index.d != exact.dim:
            raise ValueError(
                f"index ({index.ntotal} x {index.d}), precursor_mz ({n}) and exact backend "
                f"({exact.count} x {exact.dim}) disagree"
            )
        self._index: faiss.Index | None = index
        self._exact = exact
        self.count, self.dim = exact.count, exact.dim

    def _check_open(self) -> None:
        if self._index is None:
            raise RuntimeError("search on a closed FaissBackend")

    def _ranked(
        self, q: np.ndarray, k: int, w: np.ndarray | None, min_score: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Plain rows from the HNSW index; windowed rows answered exactly."""
        b = len(q)
        indices, scores = padded_results(b, k)
        plain, windowed = plain_and_windowed(w, b)
        if plain.size:
            dist, labels = self._index.search(np.ascontiguousarray(q[plain]), k)
            indices[plain], scores[plain] = sort_rows(labels.astype(np.int64), dist)
        if windowed.size:
            indices[windowed], scores[windowed] = self._exact.search_padded(
                q[windowed], k, w[windowed]
            )
        return indices, scores

    def close(self) -> None:
        """Drop the index (its memory goes once nothing else holds it)."""
        self._index = None

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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    import faiss
    from qdrant_client import QdrantClient

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

# Largest transient score matrix (bytes) one exact-search step makes: a big query batch scores
# fewer library rows per step instead of making a B x block_rows matrix of any size.
_SCORE_BYTES = 32 * 1024 * 1024
# Columns per group when bounding a block's k-th best score from its group maxima (see
# `_candidates`).
_GROUP = 32
# Queries per request to Qdrant (one search request per query, sent together).
_QDRANT_BATCH = 256
_MZ_FIELD = "precursor_mz"


class BackendUnavailable(RuntimeError):
    """A backend's optional dependency is not installed; the message names the extra."""


@dataclass(frozen=True)
class Matches:
    """The k best library entries per query: `indices` int64 [B, k] (library row numbers, best
    first, -1 where no entry qualifies) and `scores` float32 [B, k] (same order, NaN where
    `indices` is -1). A fixed k columns, so that a batch is one rectangular array."""

    indices: np.ndarray
    scores: np.ndarray


@runtime_checkable
class SearchBackend(Protocol):
    """What the search model asks of a backend, whichever engine answers it."""

    kind: str  # "exact", "ann" or "qdrant"

    def search(
        self,
        queries: np.ndarray,
        k: int,
        windows: np.ndarray | None = None,
        min_score: np.ndarray | None = None,
    ) -> Matches:
        """The k best entries per query row. `windows`: None or float64 [B, 2], an inclusive
        (low, high) precursor m/z range per query (a NaN bound is open; a row of NaN filters
        nothing, and entries of unknown precursor never pass a window). `min_score`: None or
        float32 [B] (NaN: none); entries scoring below it do not qualify."""
        ...

    def close(self) -> None:
        """Let go of what the backend holds (a client, an index)."""
        ...


# ---------------------------------------------------------------------------------------------
# Shared helpers


def _as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must be [B, {dim}], got shape {np.shape(queries)}")
    return q


def _check_k(k: int) -> int:
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _as_windows(windows: np.ndarray | None, b: int) -> np.ndarray | None:
    if windows is None:
        return None
    w = np.asarray(windows, dtype=np.float64)
    if w.shape != (b, 2):
        raise ValueError(f"windows must be [{b}, 2] (low, high), got shape {w.shape}")
    return w


def _as_min_score(min_score: np.ndarray | None, b: int) -> np.ndarray | None:
    if min_score is None:
        return None
    m = np.asarray(min_score, dtype=np.float32)
    if m.shape != (b,):
        raise ValueError(f"min_score must be [{b}], got shape {m.shape}")
    return m


def _arguments(
    queries: np.ndarray, k: int, windows: np.ndarray | None, min_score: np.ndarray | None,
    dim: int,
) -> tuple[np.ndarray, int, np.ndarray | None, np.ndarray | None]:
    """A search's arguments checked and in the forms the backends use."""
    q = _as_queries(queries, dim)
    return q, _check_k(k), _as_windows(windows, len(q)), _as_min_score(min_score, len(q))


def _windowed_rows(windows: np.ndarray | None) -> np.ndarray:
    """Rows whose window filters something (not all NaN)."""
    if windows is None:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(~np.isnan(windows).all(axis=1))


def _finish(indices: np.ndarray, scores: np.ndarray, min_score: np.ndarray | None) -> Matches:
    """Turn internal results (sorted, padded with -1 / -inf) into `Matches`: entries under
    min_score dropped (they trail, since rows are sorted), padding -1 / NaN."""
    drop = indices < 0
    if min_score is not None:
        floor = np.where(np.isnan(min_score), -np.inf, min_score).astype(np.float32)
        drop |= scores < floor[:, None]
    indices = np.where(drop, -1, indices).astype(np.int64, copy=False)
    scores = np.where(drop, np.nan, scores).astype(np.float32, copy=False)
    return Matches(indices=indices, scores=scores)


def _sort_rows(indices: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by score descending, then index ascending; padding (-1) last."""
    key = np.where(indices < 0, -np.inf, scores).astype(np.float32)
    order = np.lexsort((indices, -key), axis=-1)
    return np.take_along_axis(indices, order, -1), np.take_along_axis(key, order, -1)


def _candidates(
    s: np.ndarray, k: int, floor: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(query row, column) of the entries of `s` [b, n] that may be in their row's top k:
    those at or above both `floor` (the running k-th best) and a lower bound on the block's
    own k-th best. That bound is the k-th best of the maxima of groups of g columns (k groups
    reach it, so k entries do); the entries at or above it lie in the few groups whose
    maximum does. Groups are strided (columns j, j + G, j + 2G, ...), so their maxima are an
    elementwise maximum of contiguous rows, and the whole costs a sixth of the matmul at B=64,
    where an argpartition of the block costs half of it."""
    b, n = s.shape
    g = max(1, min(_GROUP, n // (4 * k)))
    groups = n // g
    maxima = s[:, : g * groups].reshape(b, g, groups).max(axis=1)  # [b, groups]
    tail = s[:, g * groups :]  # the last n % g columns, each on its own
    pool = np.concatenate([maxima, tail], axis=1) if tail.shape[1] else maxima
    if pool.shape[1] >= k:
        floor = np.maximum(floor, np.partition(pool, pool.shape[1] - k, axis=1)[:, -k])
    qi, grp = np.nonzero(maxima >= floor[:, None])
    cols = grp[:, None] + groups * np.arange(g)  # [m, g]: every column of those groups
    hit = s[qi[:, None], cols] >= floor[qi, None]
    qi = np.broadcast_to(qi[:, None], cols.shape)[hit]
    cols = cols[hit]
    if tail.shape[1]:
        tq, tc = np.nonzero(tail >= floor[:, None])
        qi = np.concatenate([qi, tq])
        cols = np.concatenate([cols, tc + g * groups])
    return qi, cols


class _TopK:
    """The running k best (score descending, index ascending) per query over blocks of scored
    library rows. Padded with index -1 and score -inf until k entries were seen."""

    def __init__(self, b: int, k: int) -> None:
        self.k = k
        self.indices = np.full((b, k), -1, dtype=np.int64)
        self.scores = np.full((b, k), -np.inf, dtype=np.float32)

    def push(self, s: np.ndarray, rows: np.ndarray | int) -> None:
        """Merge scores `s` float32 [b, n] of library rows `rows` (int64 [n], or an int: the
        first of n consecutive rows)."""
        b, n = s.shape
        if n == 0:
            return
        k = self.k
        qi, col = _candidates(s, k, self.scores[:, -1])
        if qi.size == 0:
            return
        lib = col + rows if isinstance(rows, int) else rows[col]
        all_q = np.concatenate([np.repeat(np.arange(b), k), qi])
        all_i = np.concatenate([self.indices.ravel(), lib.astype(np.int64, copy=False)])
        all_s = np.concatenate([self.scores.ravel(), s[qi, col]])
        order = np.lexsort((all_i, -all_s, all_q))
        q_sorted = all_q[order]
        # Rank of each entry within its query's run; every query has >= k entries (its k kept).
        rank = np.arange(order.size) - np.searchsorted(q_sorted, np.arange(b))[q_sorted]
        keep = rank < k
        self.indices[q_sorted[keep], rank[keep]] = all_i[order[keep]]
        self.scores[q_sorted[keep], rank[keep]] = all_s[order[keep]]


# ---------------------------------------------------------------------------------------------
# Exact


class ExactBackend:
    """Brute-force inner product over the memory-mapped embeddings, with numpy's BLAS.

    The matrix is never copied: it is scored in blocks of `block_rows` rows (fewer for a large
    query batch, so the transient score matrix stays near 32 MiB), keeping a running top k per
    query. Precursor windows use the m/z order precomputed here (argsort, 8 bytes a row): each
    windowed query scores only the entries inside its window. Safe to share between threads
    (a search changes no state)."""

    kind = "exact"

    def __init__(
        self, embeddings: np.ndarray, precursor_mz: np.ndarray, block_rows: int = 65536
    ) -> None:
        if embeddings.ndim != 2:
            raise ValueError(f"embeddings must be [N, D], got shape {embeddings.shape}")
        mz = np.asarray(precursor_mz, dtype=np.float64)
        if mz.shape != (embeddings.shape[0],):
            raise ValueError(
                f"precursor_mz must be [{embeddings.shape[0]}], got shape {mz.shape}"
            )
        if block_rows < 1:
            raise ValueError(f"block_rows must be positive, got {block_rows}")
        self._embeddings: np.ndarray | None = embeddings
        self._block_rows = int(block_rows)
        self.count, self.dim = (int(x) for x in embeddings.shape)
        order = np.argsort(mz, kind="stable")  # NaN sorts last
        known = int(np.count_nonzero(~np.isnan(mz)))
        self._mz_order = order[:known].astype(np.int64, copy=False)
        self._mz_sorted = mz[self._mz_order]

    def search(
        self,
        queries: np.ndarray,
        k: int,
        windows: np.ndarray | None = None,
        min_score: np.ndarray | None = None,
    ) -> Matches:
        """See `SearchBackend.search`."""
        q, k, w, ms = _arguments(queries, k, windows, min_score, self.dim)
        indices, scores = self._search_raw(q, k, w)
        return _finish(indices, scores, ms)

    def _search_raw(
        self, q: np.ndarray, k: int, windows: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sorted results padded with -1 / -inf (what `FaissBackend` merges with its own)."""
        emb = self._library()
        b = len(q)
        indices = np.full((b, k), -1, dtype=np.int64)
        scores = np.full((b, k), -np.inf, dtype=np.float32)
        windowed = _windowed_rows(windows)
        plain = np.setdiff1d(np.arange(b), windowed, assume_unique=True)
        if plain.size:
            step = self._step(len(plain))
            top = _TopK(len(plain), k)
            qp = q[plain] if plain.size < b else q
            for start in range(0, self.count, step):
                block = np.asarray(emb[start : start + step], dtype=np.float32)
                # One query: a matrix-vector product over the rows as stored (numpy's
                # `q @ block.T` path is several times slower for a library that fits in cache).
                top.push((block @ qp[0])[None, :] if len(qp) == 1 else qp @ block.T, start)
                del block  # a view here, but a copy if the file is not float32
            indices[plain], scores[plain] = top.indices, top.scores
        for r in windowed:
            cand = self._in_window(windows[r, 0], windows[r, 1])
            top = _TopK(1, k)
            step = self._block_rows
            for start in range(0, cand.size, step):
                rows = cand[start : start + step]
                block = np.asarray(emb[rows], dtype=np.float32)  # gathered: a copy
                scores_r = block @ q[r]
                del block  # before the next gather, so one block at a time
                top.push(scores_r[None, :], rows)
            indices[r], scores[r] = top.indices[0], top.scores[0]
        return indices, scores

    def _step(self, b: int) -> int:
        return max(1, min(self._block_rows, _SCORE_BYTES // (4 * max(b, 1))))

    def _in_window(self, low: float, high: float) -> np.ndarray:
        """Library rows (ascending) whose precursor m/z is within [low, high]; a NaN bound is
        open, and entries of unknown m/z are never in a window."""
        lo = 0 if np.isnan(low) else int(np.searchsorted(self._mz_sorted, low, side="left"))
        hi = (
            self._mz_sorted.size
            if np.isnan(high)
            else int(np.searchsorted(self._mz_sorted, high, side="right"))
        )
        if hi <= lo:
            return np.zeros(0, dtype=np.int64)
        return np.sort(self._mz_order[lo:hi])  # ascending rows: ordered reads, tie order

    def _library(self) -> np.ndarray:
        if self._embeddings is None:
            raise RuntimeError("search on a closed ExactBackend")
        return self._embeddings

    def close(self) -> None:
        """Drop the reference to the memory map (it unmaps once nothing else holds it)."""
        self._embeddings = None


# ---------------------------------------------------------------------------------------------
# faiss (extra `ann`)


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


class FaissBackend:
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

    def search(
        self,
        queries: np.ndarray,
        k: int,
        windows: np.ndarray | None = None,
        min_score: np.ndarray | None = None,
    ) -> Matches:
        """See `SearchBackend.search`; windowed rows are answered exactly."""
        if self._index is None:
            raise RuntimeError("search on a closed FaissBackend")
        q, k, w, ms = _arguments(queries, k, windows, min_score, self.dim)
        b = len(q)
        indices = np.full((b, k), -1, dtype=np.int64)
        scores = np.full((b, k), -np.inf, dtype=np.float32)
        windowed = _windowed_rows(w)
        plain = np.setdiff1d(np.arange(b), windowed, assume_unique=True)
        if plain.size:
            dist, labels = self._index.search(np.ascontiguousarray(q[plain]), k)
            indices[plain], scores[plain] = _sort_rows(labels.astype(np.int64), dist)
        if windowed.size:
            indices[windowed], scores[windowed] = self._exact._search_raw(
                q[windowed], k, w[windowed]
            )
        return _finish(indices, scores, ms)

    def close(self) -> None:
        """Drop the index (its memory goes once nothing else holds it)."""
        self._index = None


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


# ---------------------------------------------------------------------------------------------
# Qdrant (extra `qdrant`)


def _import_qdrant() -> tuple[Any, Any]:
    try:
        from qdrant_client import QdrantClient, models
    except ImportError as exc:
        raise BackendUnavailable(
            "search in Qdrant needs qdrant-client: pip install 'zooserve[qdrant]'"
        ) from exc
    return QdrantClient, models


def open_qdrant(location: str, *, api_key: str | None = None) -> QdrantClient:
    """A client for `location`: an http(s):// URL (a Qdrant server or cluster), ":memory:",
    or a folder (local mode: qdrant-client's own pure-Python engine, fine for a few thousand
    vectors, e.g. in tests; one client at a time may hold a folder)."""
    client_cls, _ = _import_qdrant()
    if location.startswith(("http://", "https://")):
        return client_cls(url=location, api_key=api_key)
    if location == ":memory:":
        return client_cls(location=":memory:")
    return client_cls(path=str(location))


def _is_local(client: QdrantClient) -> bool:
    """Whether `client` runs qdrant-client's local mode (":memory:" or a folder)."""
    options = getattr(client, "init_options", None) or {}
    return options.get("path") is not None or options.get("location") == ":memory:"


def upload_to_qdrant(
    client: QdrantClient,
    collection: str,
    embeddings: np.ndarray,
    precursor_mz: np.ndarray,
    batch: int = 1024,
) -> None:
    """(Re)create `collection` with the library: point id = row number, payload
    `precursor_mz` (left out where unknown, so no window matches it), uploaded in batches.

    The distance is DOT, not COSINE: the rows are already unit length, and COSINE would
    normalise them again on upload (rounding), where DOT scores exactly the stored inner
    product, as the other backends do. A float index on `precursor_mz` lets a server plan
    windowed searches (local mode ignores it)."""
    _, models = _import_qdrant()
    n, d = embeddings.shape
    mz = np.asarray(precursor_mz, dtype=np.float64)
    if mz.shape != (n,):
        raise ValueError(f"precursor_mz must be [{n}], got shape {mz.shape}")
    if client.collection_exists(collection):
        client.delete_collection(collection)
    client.create_collection(
        collection,
        vectors_config=models.VectorParams(size=int(d), distance=models.Distance.DOT),
    )
    if not _is_local(client):  # local mode has no payload indexes (and warns about them)
        client.create_payload_index(collection, _MZ_FIELD, models.PayloadSchemaType.FLOAT)
    for start in range(0, n, int(batch)):
        stop = min(start + int(batch), n)
        vectors = np.asarray(embeddings[start:stop], dtype=np.float32)
        payloads = [{} if np.isnan(v) else {_MZ_FIELD: float(v)} for v in mz[start:stop]]
        client.upsert(
            collection,
            points=models.Batch(
                ids=list(range(start, stop)), vectors=vectors.tolist(), payloads=payloads
            ),
            wait=True,
        )


class QdrantBackend:
    """Search in a Qdrant collection made by `upload_to_qdrant` (ids are library row numbers,
    payload `precursor_mz`). One search request per query, sent in batches with
    `query_batch_points`; a window becomes a payload Range filter (inclusive), `min_score` a
    score_threshold. The results are re-ordered by score and then row number, as the other
    backends order them. `count`: the library size (the collection's point count). On a
    server, Qdrant's own HNSW index answers, approximate as faiss is; local mode is exact."""

    kind = "qdrant"

    def __init__(self, client: QdrantClient, collection: str, count: int) -> None:
        _, models = _import_qdrant()
        self._models = models
        self._client: QdrantClient | None = client
        self._collection = collection
        self.count = int(count)
        info = client.get_collection(collection)
        vectors = info.config.params.vectors
        self.dim = int(vectors.size)

    def search(
        self,
        queries: np.ndarray,
        k: int,
        windows: np.ndarray | None = None,
        min_score: np.ndarray | None = None,
    ) -> Matches:
        """See `SearchBackend.search`."""
        if self._client is None:
            raise RuntimeError("search on a closed QdrantBackend")
        q, k, w, ms = _arguments(queries, k, windows, min_score, self.dim)
        b = len(q)
        requests = [self._request(q[r], k, w, ms, r) for r in range(b)]
        indices = np.full((b, k), -1, dtype=np.int64)
        scores = np.full((b, k), -np.inf, dtype=np.float32)
        for start in range(0, b, _QDRANT_BATCH):
            answers = self._client.query_batch_points(
                self._collection, requests[start : start + _QDRANT_BATCH]
            )
            for r, answer in enumerate(answers, start):
                points = answer.points[:k]
                indices[r, : len(points)] = [int(p.id) for p in points]
                scores[r, : len(points)] = [p.score for p in points]
        indices, scores = _sort_rows(indices, scores)
        return _finish(indices, scores, ms)

    def _request(
        self,
        query: np.ndarray,
        k: int,
        windows: np.ndarray | None,
        min_score: np.ndarray | None,
        r: int,
    ) -> Any:
        models = self._models
        query_filter = None
        if windows is not None and not np.isnan(windows[r]).all():
            low, high = windows[r]
            query_filter = models.Filter(
                must=[
                    models.FieldCondition(
                        key=_MZ_FIELD,
                        range=models.Range(
                            gte=None if np.isnan(low) else float(low),
                            lte=None if np.isnan(high) else float(high),
                        ),
                    )
                ]
            )
        threshold = None
        if min_score is not None and not np.isnan(min_score[r]):
            # One float32 step lower: Qdrant may drop a score equal to its threshold, where
            # min_score keeps it; `_finish` then drops what is really below.
            threshold = float(np.nextafter(np.float32(min_score[r]), np.float32(-np.inf)))
        return models.QueryRequest(
            query=query.tolist(),
            filter=query_filter,
            limit=k,
            score_threshold=threshold,
            with_payload=False,
            with_vector=False,
        )

    def close(self) -> None:
        """Close the client (local mode: releases the folder's lock)."""
        if self._client is not None:
            self._client.close()
            self._client = None

"""Exact search (`ExactBackend`): numpy brute force over the memory-mapped library, in blocks,
with a running top k per query (`_TopK`) that keeps only the candidates a block's own k-th best
score lets through (`_candidates`). The reference the other backends are measured against,
and the one that answers precursor windows."""

from __future__ import annotations

import numpy as np

from zooserve.serving.search.backend_protocol import (
    BackendBase,
    padded_results,
    plain_and_windowed,
)

# Largest transient score matrix (bytes) one exact-search step makes: a big query batch scores
# fewer library rows per step instead of making a B x block_rows matrix of any size.
_SCORE_BYTES = 32 * 1024 * 1024
# Columns per group when bounding a block's k-th best score from its group maxima (see
# `_candidates`).
_GROUP = 32


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
        self.indices, self.scores = padded_results(b, k)

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


class ExactBackend(BackendBase):
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

    def _ranked(
        self, q: np.ndarray, k: int, windows: np.ndarray | None, min_score: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.search_padded(q, k, windows)  # `to_matches` drops what is below min_score

    def search_padded(
        self, q: np.ndarray, k: int, windows: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sorted results padded with -1 / -inf (what `ann.FaissBackend` merges with its own)."""
        emb = self._library()
        b = len(q)
        indices, scores = padded_results(b, k)
        plain, windowed = plain_and_windowed(windows, b)
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

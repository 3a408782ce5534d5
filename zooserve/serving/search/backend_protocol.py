"""The contract every search backend keeps (`SearchBackend`, its answer `Matches`, and
`BackendUnavailable` for an extra that is not installed), `BackendBase`, the one `search`
the three backends answer with, and the pieces the backends share:
a search's arguments checked (`search_arguments`, `plain_and_windowed`) and internal results
(`padded_results`) made into `Matches` in the one order all backends answer in (`sort_rows`,
`to_matches`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


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


def search_arguments(
    queries: np.ndarray, k: int, windows: np.ndarray | None, min_score: np.ndarray | None,
    dim: int,
) -> tuple[np.ndarray, int, np.ndarray | None, np.ndarray | None]:
    """A search's arguments checked and in the forms the backends use."""
    q = _as_queries(queries, dim)
    return q, _check_k(k), _as_windows(windows, len(q)), _as_min_score(min_score, len(q))


def plain_and_windowed(windows: np.ndarray | None, b: int) -> tuple[np.ndarray, np.ndarray]:
    """The query rows of a batch of `b`: those with no window to apply, and those whose window
    filters something (not all NaN)."""
    if windows is None:
        windowed = np.zeros(0, dtype=np.int64)
    else:
        windowed = np.flatnonzero(~np.isnan(windows).all(axis=1))
    return np.setdiff1d(np.arange(b), windowed, assume_unique=True), windowed


def padded_results(b: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Internal results for `b` queries before any entry is found: indices int64 [b, k] of -1
    and scores float32 [b, k] of -inf."""
    return np.full((b, k), -1, dtype=np.int64), np.full((b, k), -np.inf, dtype=np.float32)


class BackendBase:
    """The `search` every backend answers with: the backend still open (`_check_open`), the
    arguments checked, each row's k best found by the backend (`_ranked`: sorted, padded with
    -1 / -inf) and made into `Matches`. A backend sets `dim` and defines `_ranked`."""

    dim: int

    def search(
        self,
        queries: np.ndarray,
        k: int,
        windows: np.ndarray | None = None,
        min_score: np.ndarray | None = None,
    ) -> Matches:
        """See `SearchBackend.search`."""
        self._check_open()
        q, k, w, ms = search_arguments(queries, k, windows, min_score, self.dim)
        indices, scores = self._ranked(q, k, w, ms)
        return to_matches(indices, scores, ms)

    def _check_open(self) -> None:
        """Refuse a search once closed, before its arguments are read."""

    def _ranked(
        self, q: np.ndarray, k: int, windows: np.ndarray | None, min_score: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


def to_matches(indices: np.ndarray, scores: np.ndarray, min_score: np.ndarray | None) -> Matches:
    """Turn internal results (sorted, padded with -1 / -inf) into `Matches`: entries under
    min_score dropped (they trail, since rows are sorted), padding -1 / NaN."""
    drop = indices < 0
    if min_score is not None:
        floor = np.where(np.isnan(min_score), -np.inf, min_score).astype(np.float32)
        drop |= scores < floor[:, None]
    indices = np.where(drop, -1, indices).astype(np.int64, copy=False)
    scores = np.where(drop, np.nan, scores).astype(np.float32, copy=False)
    return Matches(indices=indices, scores=scores)


def sort_rows(indices: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Order each row by score descending, then index ascending; padding (-1) last."""
    key = np.where(indices < 0, -np.inf, scores).astype(np.float32)
    order = np.lexsort((indices, -key), axis=-1)
    return np.take_along_axis(indices, order, -1), np.take_along_axis(key, order, -1)

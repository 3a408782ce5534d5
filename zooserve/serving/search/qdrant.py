"""Search in Qdrant (extra `qdrant`): a client for a server, ":memory:" or a folder, a library
uploaded as a collection, and `QdrantBackend`, which answers from it. qdrant_client is
imported when first needed; its absence raises `BackendUnavailable`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from zooserve.serving.search.backend_protocol import (
    BackendBase,
    BackendUnavailable,
    padded_results,
    sort_rows,
)

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

# Queries per request to Qdrant (one search request per query, sent together).
_QDRANT_BATCH = 256
_MZ_FIELD = "precursor_mz"


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


class QdrantBackend(BackendBase):
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

    def _check_open(self) -> None:
        if self._client is None:
            raise RuntimeError("search on a closed QdrantBackend")

    def _ranked(
        self, q: np.ndarray, k: int, w: np.ndarray | None, ms: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        b = len(q)
        requests = [self._request(q[r], k, w, ms, r) for r in range(b)]
        indices, scores = padded_results(b, k)
        for start in range(0, b, _QDRANT_BATCH):
            answers = self._client.query_batch_points(
                self._collection, requests[start : start + _QDRANT_BATCH]
            )
            for r, answer in enumerate(answers, start):
                points = answer.points[:k]
                indices[r, : len(points)] = [int(p.id) for p in points]
                scores[r, : len(points)] = [p.score for p in points]
        return sort_rows(indices, scores)

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
            # min_score keeps it; `to_matches` then drops what is really below.
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

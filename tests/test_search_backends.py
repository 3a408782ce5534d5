"""The search backends against plain numpy: exact search equals a full `queries @ E.T` and an
argsort (blockwise or not, windows, min_score, padding, ties), and the faiss HNSW index and
Qdrant (local mode, a folder and ":memory:") return the same top 10 as exact search on a
clustered library like the model's ReLU embeddings. The extras are installed wherever these
tests run; their absence is a failure here, not a skip."""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.paths import ROOT
from zooserve.serving.search.backends import (
    ANN_MIN_RECALL,
    BackendUnavailable,
    ExactBackend,
    FaissBackend,
    Matches,
    QdrantBackend,
    SearchBackend,
    build_faiss_index,
    load_faiss_index,
    measure_recall,
    open_qdrant,
    save_faiss_index,
    upload_to_qdrant,
)

N, D, CENTRES, K = 3000, 200, 150, 10
NAN_MZ_ROWS = np.arange(0, N, 97)  # entries of unknown precursor


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[np.ndarray, np.ndarray]:
    """3000 non-negative unit rows around 150 centres (like ReLU embeddings), saved as .npy and
    opened memory-mapped, and a precursor m/z per row (uniform 100..1000, some NaN)."""
    rng = np.random.default_rng(7)
    centres = np.maximum(rng.standard_normal((CENTRES, D)), 0)
    rows = centres[rng.integers(0, CENTRES, N)] + 0.35 * rng.standard_normal((N, D))
    emb = np.maximum(rows, 0).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    path = tmp_path_factory.mktemp("library") / "embeddings.npy"
    np.save(path, emb)
    mz = rng.uniform(100, 1000, N)
    mz[NAN_MZ_ROWS] = np.nan
    return np.load(path, mmap_mode="r"), mz


@pytest.fixture(scope="module")
def queries(library: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """24 library rows with a little noise; the first is an entry of unknown precursor."""
    emb, _ = library
    rng = np.random.default_rng(11)
    rows = np.concatenate([[NAN_MZ_ROWS[3]], rng.choice(N, 23, replace=False)])
    q = np.asarray(emb[rows]) + 0.02 * rng.standard_normal((rows.size, D)).astype(np.float32)
    q = np.maximum(q, 0)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def exact(library: tuple[np.ndarray, np.ndarray]) -> ExactBackend:
    return ExactBackend(*library)


@pytest.fixture(scope="module")
def faiss_backend(library: tuple[np.ndarray, np.ndarray], exact: ExactBackend) -> FaissBackend:
    emb, mz = library
    return FaissBackend(build_faiss_index(emb), mz, exact)


def reference(
    queries: np.ndarray,
    emb: np.ndarray,
    k: int,
    allowed: np.ndarray | None = None,
    min_score: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top k by a full matmul and a stable argsort (score descending, index ascending), with
    an optional [B, N] mask of qualifying entries; -1 / NaN where fewer qualify."""
    scores = queries @ np.asarray(emb).T
    ok = np.ones(scores.shape, dtype=bool) if allowed is None else allowed.copy()
    if min_score is not None:
        ok &= np.isnan(min_score)[:, None] | (scores >= min_score[:, None])
    order = np.argsort(np.where(ok, -scores, np.inf), axis=1, kind="stable")
    width = min(k, scores.shape[1])
    top = order[:, :width]
    indices = np.full((len(queries), k), -1, dtype=np.int64)
    out = np.full((len(queries), k), np.nan, dtype=np.float32)
    valid = np.take_along_axis(ok, top, axis=1)
    indices[:, :width] = np.where(valid, top, -1)
    out[:, :width] = np.where(valid, np.take_along_axis(scores, top, axis=1), np.nan)
    return indices, out


def window_mask(mz: np.ndarray, windows: np.ndarray) -> np.ndarray:
    low = np.where(np.isnan(windows[:, :1]), -np.inf, windows[:, :1])
    high = np.where(np.isnan(windows[:, 1:]), np.inf, windows[:, 1:])
    inside = (mz[None, :] >= low) & (mz[None, :] <= high)  # False for NaN m/z
    return inside | np.isnan(windows).all(axis=1)[:, None]


def assert_same(got: Matches, indices: np.ndarray, scores: np.ndarray, atol: float = 1e-5):
    assert got.indices.dtype == np.int64 and got.scores.dtype == np.float32
    assert got.indices.shape == indices.shape and got.scores.shape == scores.shape
    np.testing.assert_array_equal(got.indices, indices)
    np.testing.assert_array_equal(np.isnan(got.scores), indices < 0)
    np.testing.assert_allclose(got.scores, scores, atol=atol, rtol=0)


def sample_windows(queries: np.ndarray, library: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Windows of +-40 m/z around each query's own library entry (queries are noisy library
    rows; the first has no precursor), a row of NaN, an empty window, two open ones and one
    that is a single m/z."""
    emb, mz = library
    own = np.argmax(queries @ np.asarray(emb).T, axis=1)
    centre = np.where(np.isnan(mz[own]), 500.0, mz[own])
    windows = np.column_stack([centre - 40, centre + 40])
    windows[0] = [100.0, np.nan]  # all known precursors; the query's own entry has none
    windows[2] = np.nan
    windows[4] = [5.0, 6.0]
    windows[5, 0] = np.nan
    windows[6, 1] = np.nan
    windows[7] = mz[own[7]]  # a point: bounds are inclusive, so exactly the own entry
    return windows


# ---------------------------------------------------------------------------------------------
# Exact search


@pytest.mark.parametrize("block_rows", [65536, 500, 7])
@pytest.mark.parametrize("k", [1, K, 64])
def test_exact_equals_full_matmul(library, queries, block_rows: int, k: int) -> None:
    emb, mz = library
    backend = ExactBackend(emb, mz, block_rows=block_rows)
    assert_same(backend.search(queries, k), *reference(queries, emb, k))


def test_exact_pads_when_k_exceeds_library(library, queries) -> None:
    emb, mz = library
    backend = ExactBackend(emb, mz, block_rows=1000)
    got = backend.search(queries[:3], N + 5)
    assert got.indices.shape == (3, N + 5)
    assert_same(got, *reference(queries[:3], emb, N + 5))
    assert (got.indices[:, N:] == -1).all() and np.isnan(got.scores[:, N:]).all()
    assert all(sorted(row[:N]) == list(range(N)) for row in got.indices)


@pytest.mark.parametrize("block_rows", [65536, 7])
def test_exact_breaks_ties_by_row_number(block_rows: int) -> None:
    """Entries of 0 and 0.5 score exact multiples of 0.25, so most scores tie; the k-th place
    falls inside a tie, and the lowest row numbers must win it, in any block."""
    rng = np.random.default_rng(3)
    emb = np.zeros((300, 16), dtype=np.float32)
    for row in emb:
        row[rng.choice(16, 4, replace=False)] = 0.5
    queries = emb[[0, 10, 200]].copy()
    backend = ExactBackend(emb, np.full(300, 500.0), block_rows=block_rows)
    for k in (1, 5, 17):
        got = backend.search(queries, k)
        assert_same(got, *reference(queries, emb, k), atol=0)


def test_exact_keeps_the_memory_map(library, queries) -> None:
    """A search makes small transients only (a block of 500 rows at most, gathered for a
    window), never a copy of the library."""
    emb, mz = library
    backend = ExactBackend(emb, mz, block_rows=500)
    backend.search(queries[:1], K)
    tracemalloc.start()
    try:
        backend.search(queries[:1], K)
        backend.search(queries[:1], K, np.array([[100.0, 1000.0]]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < emb.nbytes / 4, f"peak {peak} bytes for a {emb.nbytes}-byte library"


def test_windows_restrict_to_the_precursor_range(library, queries) -> None:
    emb, mz = library
    windows = sample_windows(queries, library)
    expected = reference(queries, emb, K, window_mask(mz, windows))
    for block_rows in (65536, 50):
        got = ExactBackend(emb, mz, block_rows=block_rows).search(queries, K, windows)
        assert_same(got, *expected)
    # inside the window, and never an entry of unknown precursor
    for row, (low, high) in zip(got.indices, windows, strict=True):
        found = mz[row[row >= 0]]
        if np.isnan([low, high]).all():
            continue
        assert not np.isnan(found).any()
        assert (found >= np.nan_to_num(low, nan=-np.inf)).all()
        assert (found <= np.nan_to_num(high, nan=np.inf)).all()
    plain = ExactBackend(emb, mz).search(queries, K)
    own = plain.indices[0, 0]
    assert np.isnan(mz[own])  # query 0's best entry has no precursor ...
    assert own not in got.indices[0]  # ... so a window excludes it
    np.testing.assert_array_equal(got.indices[2], plain.indices[2])  # NaN row: no filter
    assert (got.indices[4] == -1).all() and np.isnan(got.scores[4]).all()  # empty window
    assert got.indices[7, 0] == plain.indices[7, 0] and (got.indices[7, 1:] == -1).all()
    changed = (got.indices != plain.indices).any(axis=1)
    assert changed[[0, 1, 3, 4]].all()


def test_min_score_drops_entries_below_it(library, queries, exact: ExactBackend) -> None:
    emb, _ = library
    plain = exact.search(queries, K)
    min_score = np.full(len(queries), np.nan, dtype=np.float32)
    min_score[1] = plain.scores[1, 4]  # equal to the 5th score: kept, the 6th is not
    min_score[3] = 0.99  # above nearly everything
    min_score[5:] = 0.9
    got = exact.search(queries, K, min_score=min_score)
    assert_same(got, *reference(queries, emb, K, min_score=min_score))
    assert (got.indices[1, :5] == plain.indices[1, :5]).all() and (got.indices[1, 5:] == -1).all()
    np.testing.assert_array_equal(got.indices[0], plain.indices[0])  # NaN: no threshold
    assert (got.indices == -1).any()  # some padding
    has = got.indices >= 0
    assert (got.scores[has] >= np.broadcast_to(np.nan_to_num(min_score, nan=-1)[:, None],
                                               has.shape)[has]).all()
    assert np.isnan(got.scores[~has]).all()


def test_search_checks_its_arguments(exact: ExactBackend, queries) -> None:
    with pytest.raises(ValueError, match="queries"):
        exact.search(queries[:, :10], K)
    with pytest.raises(ValueError, match="k must"):
        exact.search(queries, 0)
    with pytest.raises(ValueError, match="windows"):
        exact.search(queries, K, windows=np.zeros((len(queries), 3)))
    with pytest.raises(ValueError, match="min_score"):
        exact.search(queries, K, min_score=np.zeros(2, dtype=np.float32))


def test_backends_follow_the_protocol(exact, faiss_backend) -> None:
    assert isinstance(exact, SearchBackend) and exact.kind == "exact"
    assert isinstance(faiss_backend, SearchBackend) and faiss_backend.kind == "ann"


def test_faiss_backend_searches_on_one_thread(library, exact, faiss_backend) -> None:
    """The server runs its own inference threads: faiss must not add OpenMP teams."""
    import faiss

    _, mz = library
    faiss.omp_set_num_threads(2)
    FaissBackend(faiss_backend._index, mz, exact)
    assert faiss.omp_get_max_threads() == 1


# ---------------------------------------------------------------------------------------------
# faiss


def test_faiss_recall_reaches_the_bar(library, exact, faiss_backend) -> None:
    emb, _ = library
    recall = measure_recall(faiss_backend, exact, emb, sample=1000, k=K, seed=0)
    assert recall >= ANN_MIN_RECALL
    assert measure_recall(exact, exact, emb, sample=200) == 1.0


def test_measure_recall_counts_misses(library, exact) -> None:
    """A backend that returns the exact top 10 with half of it wrong scores 0.5."""

    class HalfWrong:
        kind = "broken"

        def search(self, queries, k, windows=None, min_score=None) -> Matches:
            m = exact.search(queries, k)
            indices = m.indices.copy()
            indices[:, k // 2 :] = (indices[:, k // 2 :] + N // 2) % N  # far away rows
            return Matches(indices=indices, scores=m.scores)

        def close(self) -> None:
            pass

    emb, _ = library
    recall = measure_recall(HalfWrong(), exact, emb, sample=300, k=K, seed=1)
    assert 0.45 <= recall <= 0.55


def test_faiss_index_survives_save_and_load(library, exact, faiss_backend, queries, tmp_path):
    emb, mz = library
    path = tmp_path / "library.faiss"
    save_faiss_index(faiss_backend._index, path)
    index = load_faiss_index(path, ef_search=64)
    assert index.ntotal == N and index.hnsw.efSearch == 64
    loaded = FaissBackend(index, mz, exact)
    want = faiss_backend.search(queries, K)
    assert_same(loaded.search(queries, K), want.indices, want.scores, atol=0)
    loaded.close()
    with pytest.raises(RuntimeError, match="closed"):
        loaded.search(queries, K)


# ---------------------------------------------------------------------------------------------
# All backends agree


# Local mode in a folder commits each point to SQLite on its own (a few ms each, on disk), so
# that collection holds the first 300 rows (seconds, not half a minute, on a busy disk) and is
# checked against exact search over those.
FOLDER_ROWS = 300


@pytest.fixture(scope="module", params=["folder", ":memory:"])
def qdrant_backend(request, library, tmp_path_factory) -> tuple[QdrantBackend, int]:
    """A Qdrant local-mode collection of the library (or its first FOLDER_ROWS rows) and the
    number of rows it holds."""
    emb, mz = library
    rows = FOLDER_ROWS if request.param == "folder" else N
    if request.param == "folder":
        location = str(tmp_path_factory.mktemp("qdrant"))
    else:
        location = ":memory:"
    client = open_qdrant(location)
    upload_to_qdrant(client, "library", emb[:rows], mz[:rows], batch=300)
    if request.param == "folder":  # the folder keeps the collection for a new client
        client.close()
        client = open_qdrant(location)
    backend = QdrantBackend(client, "library", rows)
    yield backend, rows
    backend.close()


def test_qdrant_collection_holds_the_library(library, qdrant_backend) -> None:
    emb, mz = library
    backend, rows = qdrant_backend
    assert backend.kind == "qdrant" and isinstance(backend, SearchBackend)
    client = backend._client
    assert client.count("library").count == rows
    points = client.retrieve("library", [0, 5, 97], with_vectors=True)
    by_id = {p.id: p for p in points}
    assert by_id[0].payload == {} and by_id[97].payload == {}  # unknown precursor
    assert by_id[5].payload == {"precursor_mz": pytest.approx(mz[5])}
    np.testing.assert_allclose(by_id[5].vector, emb[5], atol=1e-7)  # DOT: stored as given


@pytest.mark.parametrize("filtered", ["none", "windows", "min_score", "both"])
def test_all_backends_agree(library, queries, exact, faiss_backend, qdrant_backend, filtered):
    qdrant, rows = qdrant_backend
    windows = sample_windows(queries, library) if filtered in ("windows", "both") else None
    min_score = None
    if filtered in ("min_score", "both"):
        min_score = np.full(len(queries), 0.9, dtype=np.float32)
        min_score[::3] = np.nan
    emb, mz = library
    others: tuple[SearchBackend, ...] = (faiss_backend, qdrant)
    if rows < N:
        emb, mz = emb[:rows], mz[:rows]
        exact, others = ExactBackend(emb, mz), (qdrant,)
    want = exact.search(queries, K, windows, min_score)
    allowed = None if windows is None else window_mask(mz, windows)
    assert_same(want, *reference(queries, emb, K, allowed, min_score))
    for backend in others:
        got = backend.search(queries, K, windows, min_score)
        assert_same(got, want.indices, want.scores)
    if filtered != "none":
        assert (want.indices == -1).any()  # the filters left something out


# ---------------------------------------------------------------------------------------------
# Missing extras


def test_missing_faiss_names_the_extra(monkeypatch, library, exact, tmp_path) -> None:
    emb, mz = library
    monkeypatch.setitem(sys.modules, "faiss", None)
    calls = [
        lambda: build_faiss_index(emb),
        lambda: load_faiss_index(tmp_path / "absent.faiss"),
        lambda: FaissBackend(object(), mz, exact),
    ]
    for call in calls:
        with pytest.raises(BackendUnavailable, match=r"pip install 'zooserve\[ann\]'"):
            call()
    assert issubclass(BackendUnavailable, RuntimeError)


def test_missing_qdrant_client_names_the_extra(monkeypatch, library) -> None:
    emb, mz = library
    monkeypatch.setitem(sys.modules, "qdrant_client", None)
    calls = [
        lambda: open_qdrant(":memory:"),
        lambda: upload_to_qdrant(object(), "library", emb, mz),
        lambda: QdrantBackend(object(), "library", N),
    ]
    for call in calls:
        with pytest.raises(BackendUnavailable, match=r"pip install 'zooserve\[qdrant\]'"):
            call()


def test_module_imports_with_numpy_alone() -> None:
    code = (
        "import sys\n"
        "sys.modules['faiss'] = None\n"
        "sys.modules['qdrant_client'] = None\n"
        "import zooserve.serving.search.backends as b\n"
        "m = b.ExactBackend(b.np.eye(3, dtype='float32'), b.np.ones(3)).search("
        "b.np.eye(3, dtype='float32'), 2)\n"
        "print(m.indices.tolist())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(ROOT), capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[0, 1], [1, 0], [2, 0]]"

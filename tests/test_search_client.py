"""`Client.search`, `AsyncClient.search` and `zooserve search` against a real `zooserve serve`
on the shipped models, whose spectra_search is the library of
`zooserve library simulate --count 4000 --seed 1`: noisy copies of its spectra find their
originals; top_k, the precursor window and the score floor shape the answer; the library's
summary comes from its ModelConfig, asked for once; every failure is one ClientError (or one
line from the command) and the server answers afterwards."""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys

import numpy as np
import pytest

import zooserve
from tests.helpers.counting_stub import CountingStub
from tests.helpers.paths import ROOT
from zooserve import ClientError
from zooserve.spectra.mgf import write_mgf
from zooserve.spectra.simulator import noisy_copy, simulate_library

LIBRARY = "spectra_search"


@pytest.fixture(scope="module")
def client(server):
    with zooserve.Client(server.url, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def queries():
    """Noisy copies of every 40th library spectrum: 100 queries, each naming its ORIGINAL."""
    library = list(simulate_library(4000, seed=1))
    rng = np.random.default_rng([1, 7])
    return [noisy_copy(library[number], rng) for number in range(0, 4000, 40)]


def raised(call) -> ClientError:
    with pytest.raises(ClientError) as caught:
        call()
    return caught.value


def ids(matches) -> list[list[str]]:
    return [[match.id for match in row] for row in matches]


def test_noisy_copies_find_their_originals(client, queries):
    results = client.search(LIBRARY, queries, top_k=1)
    assert results.queries == [query.id for query in queries]
    assert results.queries[0] == "query-synthetic-0000000"
    found = [row[0].id if row else None for row in results.matches]
    originals = [query.fields["ORIGINAL"] for query in queries]
    hits = sum(a == b for a, b in zip(found, originals, strict=True))
    assert hits >= 95, f"{hits} of 100 found their original first"


def test_top_k_matches_best_first(client, queries):
    results = client.search(LIBRARY, queries[:20], top_k=7)
    assert [len(row) for row in results.matches] == [7] * 20
    for row in results.matches:
        scores = [match.score for match in row]
        assert scores == sorted(scores, reverse=True)
        assert all(math.isfinite(s) and -1.0 <= s <= 1.0001 for s in scores)
        assert all(match.metadata["id"] == match.id and "precursor_mz" in match.metadata
                   for match in row)
    assert [len(row) for row in client.search(LIBRARY, queries[:3]).matches] == [10] * 3
    frame = results.to_frame()
    assert len(frame) == 140
    assert list(frame.columns[:4]) == ["query", "rank", "id", "score"]
    assert {"precursor_mz", "name", "charge"} <= set(frame.columns)
    assert frame["rank"].tolist()[:8] == [1, 2, 3, 4, 5, 6, 7, 1]
    assert frame["id"].tolist() == [m.id for row in results.matches for m in row]


def test_the_precursor_window_keeps_only_entries_within_it(client, queries):
    tolerance = 0.5
    plain = client.search(LIBRARY, queries[:30], top_k=10)
    windowed = client.search(LIBRARY, queries[:30], top_k=10, precursor_tolerance=tolerance)

    def outside(results) -> int:
        return sum(abs(match.metadata["precursor_mz"] - query.precursor_mz) > tolerance
                   for query, row in zip(queries, results.matches, strict=False)
                   for match in row)

    assert outside(plain) > 0  # without the window, entries of other masses come too
    assert outside(windowed) == 0
    assert all(row for row in windowed.matches)  # each original is within its own window
    assert any(len(row) < 10 for row in windowed.matches)
    # a query without a precursor m/z (a dict without one) is not windowed
    query = queries[0]
    bare = {"mz": query.mz.tolist(), "intensity": query.intensity.tolist(), "id": "bare"}
    both = client.search(LIBRARY, [query, bare], top_k=10, precursor_tolerance=tolerance)
    assert both.queries == [query.id, "bare"]
    assert ids(both.matches)[0] == ids(windowed.matches)[0]
    assert ids(both.matches)[1] == ids(plain.matches)[0]


def test_min_score_drops_the_lower_matches(client, queries):
    floor = 0.6
    plain = client.search(LIBRARY, queries[:30], top_k=10)
    kept = client.search(LIBRARY, queries[:30], top_k=10, min_score=floor)
    assert any(match.score < floor for row in plain.matches for match in row)
    assert any(len(row) < 10 for row in kept.matches)
    for full, row in zip(plain.matches, kept.matches, strict=True):
        assert all(match.id and match.score >= floor and match.metadata for match in row)
        assert [m.id for m in row] == [m.id for m in full if m.score >= floor - 1e-6][:len(row)]
    nothing = client.search(LIBRARY, queries[:2], top_k=5, min_score=0.99999)
    assert nothing.matches == [[], []]
    assert "no match" in nothing.describe()


def test_the_library_summary_comes_from_the_config_asked_once(server, queries):
    with zooserve.Client(server.url, timeout=30) as client:
        client._stub = counting = CountingStub(client._stub)
        results = client.search(LIBRARY, queries[:2])
        again = client.search(LIBRARY, queries[2:4], top_k=3)
        assert counting.calls == ["ModelConfig", "ModelInfer", "ModelInfer"]
    assert results.library["name"] == LIBRARY and results.library["count"] == 4000
    assert results.library["version"] == 1 and results.library["dimension"] == 200
    assert results.library["embedding_model"] == "spectra_embedding"
    assert again.library == results.library
    assert results.describe().splitlines()[0] == "library spectra_search version 1 (4000 spectra)"


def test_more_queries_than_a_batch_go_in_several_requests(server, queries):
    with zooserve.Client(server.url, timeout=30) as client:
        client._stub = counting = CountingStub(client._stub)
        many = client.search(LIBRARY, queries * 11, top_k=3)  # 1100: the library takes 1024
        assert counting.calls == ["ModelConfig", "ModelInfer", "ModelInfer"]
        once = client.search(LIBRARY, queries, top_k=3)
        assert len(many.matches) == 1100
        assert ids(many.matches[1000:]) == ids(once.matches) == ids(many.matches[:100])
        tiny = {"mz": [100.0, 200.0], "intensity": [1.0, 1.0]}
        error = raised(lambda: client.search(LIBRARY, [*queries * 11, tiny]))
        assert error.code == "INVALID_ARGUMENT"
        assert error.args[0].startswith("queries 1024..1100, sent together: ")
        assert "spectrum 76 " in str(error)  # the server's row in that request


# errors


def test_an_unknown_library_is_not_found(client, queries):
    error = raised(lambda: client.search("no_such_library", queries[:1]))
    assert error.code == "NOT_FOUND"
    assert "no_such_library" in str(error)


def test_top_k_beyond_the_maximum_is_invalid(client, queries):
    error = raised(lambda: client.search(LIBRARY, queries[:1], top_k=101))
    assert error.code == "INVALID_ARGUMENT"
    assert "top_k" in str(error) and "100" in str(error)
    assert raised(lambda: client.search(LIBRARY, queries[:1], top_k=2.5)).code is None


def test_a_spectrum_of_two_peaks_is_invalid_naming_the_minimum(client, queries):
    two = {"mz": [100.0, 200.0], "intensity": [5.0, 3.0], "id": "two"}
    error = raised(lambda: client.search(LIBRARY, [queries[0], two]))
    assert error.code == "INVALID_ARGUMENT"
    assert "spectrum 1 has 2 peaks" in str(error) and "at least 5" in str(error)


def test_the_client_refuses_what_it_cannot_send(client, queries):
    uneven = {"mz": [100.0, 200.0, 300.0], "intensity": [1.0, 2.0], "id": "uneven"}
    error = raised(lambda: client.search(LIBRARY, [queries[0], uneven]))
    assert error.code is None
    assert str(error) == "query 1 ('uneven'): 3 m/z values but 2 intensities"
    unnamed = raised(lambda: client.search(LIBRARY, [{"mz": [1.0], "intensity": []}]))
    assert str(unnamed).startswith("query 0: 1 m/z values but 0 intensities")
    assert raised(lambda: client.search(LIBRARY, [])).code is None
    typo = raised(lambda: client.search(LIBRARY, [{"mz": [1.0], "intensity": [1.0],
                                                   "pepmass": 300.0}]))
    assert "'pepmass'" in str(typo) and "precursor_mz" in str(typo)


def test_the_server_answers_after_the_errors(client, queries):
    for call in (lambda: client.search("no_such_library", queries[:1]),
                 lambda: client.search(LIBRARY, queries[:1], top_k=101),
                 lambda: client.search(LIBRARY, [{"mz": [1.0, 2.0], "intensity": [1, 1]}])):
        raised(call)
    results = client.search(LIBRARY, queries[:5], top_k=1)
    assert [row[0].id for row in results.matches] == [q.fields["ORIGINAL"] for q in queries[:5]]


def test_the_async_client_gives_the_same(server, client, queries):
    async def main():
        async with zooserve.AsyncClient(server.url, timeout=30) as async_client:
            results = await async_client.search(LIBRARY, queries[:10], top_k=4,
                                                precursor_tolerance=2.0, min_score=0.3)
            try:
                await async_client.search("no_such_library", queries[:1])
            except ClientError as error:
                return results, error
        return results, None

    results, error = asyncio.run(main())
    same = client.search(LIBRARY, queries[:10], top_k=4, precursor_tolerance=2.0,
                         min_score=0.3)
    assert results.queries == same.queries and results.library == same.library
    assert ids(results.matches) == ids(same.matches)
    for row, twin in zip(results.matches, same.matches, strict=True):
        assert [m.metadata for m in row] == [m.metadata for m in twin]
        np.testing.assert_allclose([m.score for m in row], [m.score for m in twin], atol=1e-6)
    assert error is not None and error.code == "NOT_FOUND"


# the command


def test_zooserve_search_prints_the_originals_first(server, client, queries, tmp_path):
    mgf = tmp_path / "q.mgf"
    write_mgf(mgf, queries[:20])
    from_file = client.search(LIBRARY, mgf, top_k=3)  # a path works as well
    assert from_file.queries == [query.id for query in queries[:20]]
    result = subprocess.run(
        [sys.executable, "-m", "zooserve", "search", "--library", LIBRARY, str(mgf),
         "--url", server.url, "--top-k", "3"],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "library spectra_search version 1 (4000 spectra)"
    assert lines[1].split() == ["QUERY", "RANK", "ID", "SCORE", "PRECURSOR_MZ", "NAME"]
    rows = [line.split() for line in lines[2:]]
    assert len(rows) == 60
    first = {row[0]: row[2] for row in rows if row[1] == "1"}
    assert first == {query.id: query.fields["ORIGINAL"] for query in queries[:20]}
    assert [row[2] for row in rows] == [m.id for row in from_file.matches for m in row]


def test_zooserve_search_of_an_unknown_library_is_one_line(server, queries, tmp_path):
    mgf = tmp_path / "q.mgf"
    write_mgf(mgf, queries[:2])
    result = subprocess.run(
        [sys.executable, "-m", "zooserve", "search", "--library", "nosuch", str(mgf),
         "--url", server.url], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith("zooserve search: error: NOT_FOUND: model 'nosuch'")
    missing = subprocess.run(
        [sys.executable, "-m", "zooserve", "search", "--library", LIBRARY,
         str(tmp_path / "none.mgf"), "--url", server.url],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert missing.returncode == 2
    assert missing.stderr == (f"zooserve search: error: cannot read {tmp_path / 'none.mgf'}: "
                              "No such file or directory\n")

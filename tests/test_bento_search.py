"""`POST /search` of the BentoML service, against real `bentoml serve` processes: noisy copies
of library spectra find their originals, the answer keeps to top_k, min_score and the
precursor window, agrees with the gRPC frontend of the same process, and every mistake is a
4xx naming the field while the server keeps serving. Also the trip of a library through
BentoML's model store: `zooserve bento build --only <library>` carries its embedding model,
and the Bento serves the library from the store.

The library is the repository's spectra_search (4000 spectra simulated with seed 1), or, where
it is not shipped, the same library built here from the simulator."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.helpers.bento import PENGUINS, SERVICE, RunningBento, command, ok, run_bento
from tests.helpers.paths import MODELS
from zooserve.repository.layout import sha256_of_file
from zooserve.serving.search.model import DEFAULT_PRECURSOR_TOLERANCE
from zooserve.spectra.simulator import noisy_copy, simulate_library

LIBRARY = "spectra_search"
EMBEDDING = "spectra_embedding"
LIBRARY_SIZE, LIBRARY_SEED = 4000, 1
MAX_BATCH = 64  # the server's maximum batch size: at most this many spectra per request
QUERIES = 50


def library_repository(folder: Path, *extra_libraries: str) -> Path:
    """penguins, the embedding model and the library (shipped, or built here), and copies of
    the library under the names `extra_libraries`."""
    folder.mkdir(parents=True)
    shutil.copytree(MODELS / "penguins", folder / "penguins")
    (folder / EMBEDDING / "1").mkdir(parents=True)
    for name in ("model.onnx", "card.json"):
        shutil.copy2(MODELS / EMBEDDING / "1" / name, folder / EMBEDDING / "1" / name)
    if (MODELS / LIBRARY / "1" / "library.json").is_file():
        shutil.copytree(MODELS / LIBRARY, folder / LIBRARY)
    else:
        from zooserve.serving.search.library_build import build_library
        from zooserve.spectra.mgf import write_mgf

        mgf = folder.parent / "library.mgf"
        write_mgf(mgf, simulate_library(LIBRARY_SIZE, LIBRARY_SEED))
        build_library(folder, LIBRARY, mgf, progress=None)
    for name in extra_libraries:
        shutil.copytree(folder / LIBRARY, folder / name)
    return folder


@pytest.fixture(scope="module")
def bento(tmp_path_factory) -> Iterator[RunningBento]:
    tmp = tmp_path_factory.mktemp("search")
    repository = library_repository(tmp / "models")
    env = {"BENTOML_HOME": str(tmp / "bentoml"), "ZOOSERVE_MODELS": str(repository),
           "ZOOSERVE_MODEL_SOURCE": "folder", "ZOOSERVE_MAX_BATCH_SIZE": str(MAX_BATCH)}
    with run_bento(SERVICE, tmp, env) as running:
        yield running


@pytest.fixture(scope="module")
def http(bento) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=bento.http, timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def triton(bento):
    client = grpcclient.InferenceServerClient(bento.grpc)
    yield client
    client.close()


@pytest.fixture(scope="module")
def queries() -> list[dict]:
    """Noisy copies of 50 library spectra spread over the library, as the body's spectra,
    each with its original's id as its own id."""
    picked = [s for s in simulate_library(LIBRARY_SIZE, LIBRARY_SEED)
              if s.number % (LIBRARY_SIZE // QUERIES) == 0]
    rng = np.random.default_rng(11)
    copies = [noisy_copy(spectrum, rng) for spectrum in picked]
    return [{"mz": c.mz.tolist(), "intensity": c.intensity.tolist(),
             "precursor_mz": c.precursor_mz, "id": c.fields["ORIGINAL"]} for c in copies]


def search(http: httpx.Client, **body) -> httpx.Response:
    return http.post("/search", json=body)


def found(response: httpx.Response) -> list[dict]:
    assert response.status_code == 200, response.text
    return response.json()["results"]


def still_serving(http: httpx.Client, queries: list[dict]) -> None:
    assert http.get("/readyz").status_code == 200
    assert found(search(http, spectra=queries[:1], top_k=1))[0]["matches"]


# answers


def test_noisy_copies_find_their_originals(http, queries):
    results = found(search(http, spectra=queries))
    assert [r["query"] for r in results] == list(range(QUERIES))
    assert [r["id"] for r in results] == [q["id"] for q in queries]
    hits = sum(r["matches"][0]["id"] == r["id"] for r in results)
    assert hits >= 0.95 * QUERIES, f"top-1 found the original for {hits} of {QUERIES}"


def test_matches_carry_the_entries_fields(http, queries):
    (result,) = found(search(http, spectra=[{"mz": queries[0]["mz"],
                                             "intensity": queries[0]["intensity"]}], top_k=3))
    assert result["id"] is None  # none given
    best = result["matches"][0]
    assert best["id"] == queries[0]["id"]
    assert set(best) >= {"id", "score", "precursor_mz", "name", "charge"}
    assert best["name"].startswith("synthetic molecule 0 ")


def test_top_k_is_kept_and_scores_descend(http, queries):
    for top_k, expected in ((None, 10), (1, 1), (7, 7), (100, 100)):
        body = {"spectra": queries[:5]} | ({} if top_k is None else {"top_k": top_k})
        for result in found(http.post("/search", json=body)):
            scores = [m["score"] for m in result["matches"]]
            assert len(scores) == expected
            assert scores == sorted(scores, reverse=True)
            assert all(-1.0 <= s <= 1.0 + 1e-6 for s in scores)
            assert len({m["id"] for m in result["matches"]}) == expected


def test_precursor_window_applies_only_with_a_tolerance(http, queries):
    tolerance = 0.5
    windowed = found(search(http, spectra=queries[:10], top_k=20,
                            precursor_tolerance=tolerance))
    for query, result in zip(queries, windowed, strict=False):
        assert result["matches"], query["id"]
        for match in result["matches"]:
            assert abs(match["precursor_mz"] - query["precursor_mz"]) <= tolerance + 1e-3
    # Without a tolerance the spectra's precursor_mz is no window at all (not even the
    # model's default one): matches lie outside it.
    free = found(search(http, spectra=queries[:10], top_k=20))
    assert any(abs(m["precursor_mz"] - q["precursor_mz"]) > DEFAULT_PRECURSOR_TOLERANCE
               for q, r in zip(queries, free, strict=False) for m in r["matches"])
    # A spectrum without precursor_mz is not windowed, beside one that is.
    mixed = [queries[0], {k: v for k, v in queries[1].items() if k != "precursor_mz"}]
    first, second = found(search(http, spectra=mixed, top_k=20, precursor_tolerance=tolerance))
    assert all(abs(m["precursor_mz"] - queries[0]["precursor_mz"]) <= tolerance + 1e-3
               for m in first["matches"])
    assert any(abs(m["precursor_mz"] - queries[1]["precursor_mz"]) > DEFAULT_PRECURSOR_TOLERANCE
               for m in second["matches"])


def test_min_score_drops_weaker_matches_and_their_columns(http, queries):
    unfiltered = found(search(http, spectra=queries[:10], top_k=20))
    floor = float(np.median([m["score"] for r in unfiltered for m in r["matches"]]))
    filtered = found(search(http, spectra=queries[:10], top_k=20, min_score=floor))
    kept = [m for r in filtered for m in r["matches"]]
    assert kept and all(m["score"] >= floor - 1e-6 for m in kept)
    assert all(m["id"] for m in kept)  # no padding columns
    assert len(kept) < sum(len(r["matches"]) for r in unfiltered)
    for before, after in zip(unfiltered, filtered, strict=True):
        assert [m["id"] for m in after["matches"]] == \
            [m["id"] for m in before["matches"] if m["score"] >= floor]


def test_the_answer_names_the_library(http, queries):
    body = search(http, spectra=queries[:1], top_k=1, library=LIBRARY).json()
    library = body["library"]
    assert library["name"] == LIBRARY and library["version"] == 1
    assert library["count"] == LIBRARY_SIZE
    assert library["embedding_model"] == EMBEDDING
    assert library["model_sha256"] == sha256_of_file(MODELS / EMBEDDING / "1" / "model.onnx")


def test_http_and_grpc_give_the_same_top_k(http, triton, queries):
    picked = queries[:10]
    answers = found(search(http, spectra=picked, top_k=5))
    width = max(len(q["mz"]) for q in picked)
    mz = np.zeros((len(picked), width), dtype=np.float32)
    intensity = np.zeros_like(mz)
    for row, query in enumerate(picked):
        mz[row, :len(query["mz"])] = query["mz"]
        intensity[row, :len(query["intensity"])] = query["intensity"]
    counts = np.array([len(q["mz"]) for q in picked], dtype=np.int32)
    tensors = []
    for name, array, datatype in (("mz", mz, "FP32"), ("intensity", intensity, "FP32"),
                                  ("n_peaks", counts, "INT32")):
        tensor = grpcclient.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    result = triton.infer(LIBRARY, tensors, parameters={"top_k": 5})
    ids, scores = result.as_numpy("ids"), result.as_numpy("scores")
    for row, answer in enumerate(answers):
        assert [m["id"] for m in answer["matches"]] == [i.decode() for i in ids[row]]
        np.testing.assert_array_equal(np.float32([m["score"] for m in answer["matches"]]),
                                      scores[row])


def test_openapi_documents_search(http):
    paths = http.get("/docs.json").json()["paths"]
    assert "/search" in paths


# mistakes: 4xx naming the field, and the server keeps serving

GOOD = {"mz": [81.1, 109.1, 137.1, 175.1, 239.2, 301.1],
        "intensity": [12.0, 40.0, 100.0, 8.5, 31.0, 22.0]}


@pytest.mark.parametrize(
    "body, status, fragments",
    [
        ({"spectra": [GOOD, GOOD, {"mz": [100.0, 200.0], "intensity": [1.0]}]}, 400,
         ["spectra[2].mz", "spectra[2].intensity"]),
        ({"spectra": [{"mz": GOOD["mz"], "intensity": [1, "2", 3, 4, 5, 6]}]}, 400,
         ["spectra[0].intensity[1]", "not a number"]),
        ({"spectra": [{"mz": GOOD["mz"], "intensity": [1, 2, 3, None, 5, 6]}]}, 400,
         ["spectra[0].intensity[3]"]),
        ({"spectra": [{"mz": [1e39] + GOOD["mz"][1:], "intensity": GOOD["intensity"]}]}, 400,
         ["spectra[0].mz[0]", "finite"]),
        ({"spectra": [GOOD], "top_k": 0}, 400, ["top_k"]),
        ({"spectra": [GOOD], "top_k": 101}, 400, ["top_k", "100"]),
        ({"spectra": [GOOD], "top_k": 2.5}, 400, ["top_k"]),
        ({"spectra": [GOOD], "top_k": "5"}, 400, ["top_k"]),
        ({"spectra": [GOOD], "top_k": True}, 400, ["top_k"]),
        ({"spectra": [GOOD], "min_score": 2}, 400, ["min_score"]),
        ({"spectra": [GOOD], "precursor_tolerance": -1}, 400, ["precursor_tolerance"]),
        ({"spectra": [GOOD], "topk": 5}, 400, ["'topk'", "top_k"]),
        ({"spectra": [GOOD | {"charge": 1}]}, 400, ["spectra[0]", "'charge'"]),
        ({"spectra": [GOOD | {"precursor_mz": -3}]}, 400, ["spectra[0].precursor_mz"]),
        ({"spectra": [GOOD | {"id": ["a"]}]}, 400, ["spectra[0].id"]),
        ({"spectra": [GOOD | {"id": "x" * 2000}]}, 400, ["spectra[0].id"]),
        ({"spectra": [{"intensity": GOOD["intensity"]}]}, 400, ["spectra[0].mz", "required"]),
        ({"spectra": [GOOD, [1, 2]]}, 400, ["spectra[1]", "object"]),
        ({"top_k": 3}, 400, ["spectra", "required"]),
        ({"spectra": []}, 400, ["spectra", "non-empty"]),
        ({"spectra": [GOOD] * (MAX_BATCH + 1)}, 400, ["spectra", str(MAX_BATCH)]),
        # the core's own refusals, with its message
        ({"spectra": [GOOD, {"mz": [100.0, 200.0, 300.0], "intensity": [1.0, 2.0, 3.0]}]},
         400, ["spectrum 1 has 3 peaks", "at least 5"]),
        ({"spectra": [{"mz": GOOD["mz"], "intensity": [-1.0] + GOOD["intensity"][1:]}]}, 400,
         ["intensity"]),
        # libraries
        ({"spectra": [GOOD], "library": "no_such_library"}, 404,
         ["'no_such_library'", f"libraries served: {LIBRARY}"]),
        ({"spectra": [GOOD], "library": "penguins"}, 404,
         ["'penguins' is not a spectral library", LIBRARY]),
        ({"spectra": [GOOD], "library": 7}, 400, ["library"]),
    ],
)
def test_mistakes_are_refused_naming_the_field(http, queries, body, status, fragments):
    response = http.post("/search", json=body)
    assert response.status_code == status, response.text
    message = response.json()["error"]
    for fragment in fragments:
        assert fragment in message, message
    still_serving(http, queries)


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_numbers_json_cannot_carry_are_refused(http, queries, number):
    body = ('{"spectra": [{"mz": [81.1, 109.1, ' + number + ', 175.1, 239.2, 301.1], '
            '"intensity": [12, 40, 100, 8.5, 31, 22]}]}')
    response = http.post("/search", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text
    assert "spectra[0].mz[2]" in response.json()["error"]
    still_serving(http, queries)


def test_a_body_that_is_not_an_object_is_400(http, queries):
    for body in (b"[1, 2]", b'{"spectra": '):
        response = http.post("/search", content=body,
                             headers={"Content-Type": "application/json"})
        assert response.status_code == 400, response.text
    still_serving(http, queries)


def test_no_library_served_is_404_and_predict_still_works(tmp_path):
    repository = tmp_path / "models"
    shutil.copytree(MODELS / "penguins", repository / "penguins")
    env = {"BENTOML_HOME": str(tmp_path / "bentoml"), "ZOOSERVE_MODELS": str(repository),
           "ZOOSERVE_MODEL_SOURCE": "folder"}
    with run_bento(SERVICE, tmp_path, env) as running, \
            httpx.Client(base_url=running.http, timeout=30) as http:
        response = search(http, spectra=[GOOD])
        assert response.status_code == 404, response.text
        assert "no spectral library is served" in response.json()["error"]
        assert http.post("/predict", json={"model": "penguins", "inputs": PENGUINS}) \
            .status_code == 200


# the model store and the Bento


def test_a_library_without_its_embedding_model_is_not_imported(tmp_path):
    repository = library_repository(tmp_path / "models")
    shutil.rmtree(repository / EMBEDDING)
    shutil.rmtree(repository / "penguins")
    result = command("zooserve", "bento", "import", "--models", str(repository),
                     home=tmp_path / "bentoml")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{LIBRARY}:1  skipped: its embedding model {EMBEDDING} version 1 is not in" \
        in result.stdout


def test_a_bento_of_libraries_carries_their_embedding_model_and_serves_them(
    tmp_path, queries
):
    """`zooserve bento build --only` two libraries: the Bento carries the embedding model
    too, serves both libraries from the store, and a search must then name one."""
    other = "spectra_search_copy"
    repository = library_repository(tmp_path / "models", other)
    home = tmp_path / "bentoml"
    built = ok(command("zooserve", "bento", "build", "--models", str(repository),
                       "--only", LIBRARY, other, home=home, cwd=tmp_path))
    (tag,) = [line.split()[1] for line in built.stdout.splitlines()
              if line.startswith("bento:")]
    assert f"models: {EMBEDDING}:1 {LIBRARY}:1 {other}:1" in built.stdout
    stored = home / "models" / LIBRARY / "1"
    manifest = json.loads((stored / "library.json").read_text())
    assert all(sha256_of_file(stored / name) == sha for name, sha in manifest["files"].items())

    env = {"BENTOML_HOME": str(home), "ZOOSERVE_MODELS": str(tmp_path / "nothing")}
    with run_bento(tag, tmp_path, env, cwd=tmp_path) as running, \
            httpx.Client(base_url=running.http, timeout=30) as http:
        unnamed = search(http, spectra=queries[:2])
        assert unnamed.status_code == 400, unnamed.text
        assert "library" in unnamed.json()["error"] and other in unnamed.json()["error"]
        for library in (LIBRARY, other):
            results = found(search(http, spectra=queries[:2], top_k=1, library=library))
            assert [r["matches"][0]["id"] for r in results] == [q["id"] for q in queries[:2]]
        assert "from the BentoML model store" in running.log()

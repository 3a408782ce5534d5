"""The shipped demo library, spectra_search, served by a real `zooserve serve` and asked by
tritonclient (gRPC and HTTP): noisy copies find their originals, the three query forms agree,
the precursor window, score floor and top-k hold, requests of different k batch together,
and every client mistake is an INVALID_ARGUMENT naming the problem."""

from __future__ import annotations

import json
import threading

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from tests.helpers.paths import MODELS
from tests.helpers.search_tensors import padded, tensors
from zooserve.spectra.binning import ZOO_BINNING, bin_padded
from zooserve.spectra.simulator import noisy_copy, simulate_library

LIBRARY = "spectra_search"


@pytest.fixture(scope="module")
def library():
    return list(simulate_library(4000, seed=1))


@pytest.fixture(scope="module")
def queries(library):
    rng = np.random.default_rng(11)
    picked = rng.choice(len(library), size=200, replace=False)
    return [noisy_copy(library[i], rng) for i in picked]


def search(triton, arrays, **parameters):
    result = triton.infer(LIBRARY, tensors(arrays), parameters=parameters or None)
    ids = result.as_numpy("ids")
    return ids.astype(str), result.as_numpy("scores"), result.as_numpy("metadata")


def test_noisy_copies_find_their_originals(triton, queries):
    ids, scores, _ = search(triton, padded(queries), top_k=5)
    originals = np.array([q.fields["ORIGINAL"] for q in queries])
    top1 = float(np.mean(ids[:, 0] == originals))
    print(f"top-1 {top1:.3f} over {len(queries)} noisy copies")
    assert top1 >= 0.95
    assert ids.shape == scores.shape == (200, 5)
    assert np.all(np.diff(scores, axis=1) <= 1e-6)  # best first


def test_raw_binned_and_embedded_queries_give_the_same_answer(triton, queries):
    raw = padded(queries[:32])
    binned = bin_padded(raw["mz"], raw["intensity"], raw["n_peaks"], ZOO_BINNING)
    session = ort.InferenceSession(str(MODELS / "spectra_embedding" / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    embedded = session.run(None, {"spectrum": binned})[0]
    by_raw = search(triton, raw, top_k=10)
    by_binned = search(triton, {"spectrum": binned}, top_k=10)
    by_embedding = search(triton, {"embedding": embedded}, top_k=10)
    np.testing.assert_array_equal(by_raw[0], by_binned[0])
    np.testing.assert_array_equal(by_raw[1], by_binned[1])
    np.testing.assert_array_equal(by_raw[0], by_embedding[0])
    np.testing.assert_allclose(by_raw[1], by_embedding[1], atol=1e-5)


def test_metadata_is_the_entry_as_json(triton, queries, library):
    ids, scores, metadata = search(triton, padded(queries[:3]), top_k=2)
    names = {s.id: s.fields["NAME"] for s in library}
    for row in range(3):
        for column in range(2):
            entry = json.loads(metadata[row, column])
            assert entry["id"] == ids[row, column]
            assert entry["name"] == names[entry["id"]]
            assert entry["precursor_mz"] > 0


def test_the_precursor_window_keeps_only_entries_near_the_query(triton, queries):
    arrays = padded(queries[:16])
    precursors = np.array([float(q.fields["PEPMASS"]) for q in queries[:16]], np.float32)
    precursors[3] = np.nan  # no window for this row
    ids, scores, metadata = search(triton, {**arrays, "precursor_mz": precursors}, top_k=20,
                                   precursor_tolerance=0.5)
    for row in range(16):
        entries = [json.loads(m) for m in metadata[row] if m]
        assert entries, "the original itself is within the window"
        if row != 3:
            assert all(abs(e["precursor_mz"] - precursors[row]) <= 0.5 + 1e-3 for e in entries)
            assert ids[row, 0] == queries[row].fields["ORIGINAL"]
    assert metadata[3].astype(bool).all()  # unfiltered: a full row of matches
    one_window = search(triton, {k: v[:1] for k, v in arrays.items()},
                        precursor_mz=float(precursors[0]), precursor_tolerance=0.5, top_k=20)
    np.testing.assert_array_equal(one_window[0][0], ids[0])


def test_columns_with_no_entry_left_are_padded(triton, queries):
    arrays = padded(queries[:2])
    ids, scores, metadata = search(triton, {**arrays, "precursor_mz": np.array(
        [5000.0, 5000.0], np.float32)}, top_k=3)
    assert ids.tolist() == [["", "", ""], ["", "", ""]]
    assert np.isnan(scores).all() and not metadata.astype(bool).any()


def test_min_score_drops_weaker_matches(triton, queries):
    ids, scores, _ = search(triton, padded(queries[:8]), top_k=50, min_score=0.9)
    found = ids != ""
    assert found[:, 0].all()
    assert np.all(scores[found] >= 0.9) and np.isnan(scores[~found]).all()
    assert (~found).any()  # the floor did cut some of the 50


def test_requests_of_different_k_batch_together_and_keep_their_own_k(server, queries):
    """Concurrent searches share runs (execution_count < inference_count) and each answer
    has the columns its own top_k asked for."""
    client = grpcclient.InferenceServerClient(server.url)
    before = client.get_inference_statistics(LIBRARY).model_stats[0]
    arrays = padded(queries[:1])
    answers: dict[int, tuple] = {}
    errors: list[BaseException] = []

    def ask(k: int) -> None:
        try:
            own = grpcclient.InferenceServerClient(server.url)
            for _ in range(10):
                result = own.infer(LIBRARY, tensors(arrays), parameters={"top_k": k})
                answers[k] = (result.as_numpy("ids").shape, result.as_numpy("scores").shape)
            own.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(k,)) for k in (1, 3, 7, 12, 25, 40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert answers == {k: ((1, k), (1, k)) for k in (1, 3, 7, 12, 25, 40)}
    after = client.get_inference_statistics(LIBRARY).model_stats[0]
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count
    assert inferences == 60
    print(f"{inferences} searches in {executions} runs")
    assert executions < inferences
    client.close()


def test_the_library_is_a_model_like_any_other(triton):
    assert triton.is_model_ready(LIBRARY)
    index = {m.name: m for m in triton.get_model_repository_index().models}
    assert index[LIBRARY].state == "READY"
    metadata = triton.get_model_metadata(LIBRARY)
    assert metadata.platform == "zooserve_spectral_search"
    assert [i.name for i in metadata.inputs] == ["mz", "intensity", "n_peaks", "spectrum",
                                                 "embedding", "precursor_mz"]
    assert [o.name for o in metadata.outputs] == ["ids", "scores", "metadata"]
    parameters = triton.get_model_config(LIBRARY).config.parameters
    summary = json.loads(parameters["library"].string_value)
    manifest = json.loads((MODELS / LIBRARY / "1" / "library.json").read_text())
    assert summary["count"] == 4000 == manifest["count"]
    assert summary["embedding_model"] == "spectra_embedding"
    assert summary["model_sha256"] == json.loads(
        (MODELS / "spectra_embedding" / "1" / "card.json").read_text())["onnx"]["sha256"]
    assert parameters["max_top_k"].string_value == "100"
    assert json.loads(parameters["input_binning"].string_value)["bins"] == 200


def test_search_over_http_answers_as_grpc(server, triton, queries):
    arrays = padded(queries[:4])
    client = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    result = client.infer(LIBRARY, tensors(arrays, httpclient), parameters={"top_k": 4})
    by_grpc = search(triton, arrays, top_k=4)
    np.testing.assert_array_equal(result.as_numpy("ids").astype(str), by_grpc[0])
    np.testing.assert_allclose(result.as_numpy("scores"), by_grpc[1], rtol=1e-6)
    client.close()


def _bad(**changes):
    spectrum = next(simulate_library(1, seed=1))
    arrays = padded([spectrum, spectrum])
    parameters = changes.pop("parameters", {})
    for name, value in changes.items():
        if value is None:
            arrays.pop(name)
        else:
            arrays[name] = value(arrays[name]) if callable(value) else value
    return arrays, parameters


FEW = np.array([[100, 200, 300, 400, 0]], np.float32)
MISTAKES = {
    "no query": (_bad(mz=None, intensity=None, n_peaks=None), "none given"),
    "two forms": (_bad(spectrum=np.zeros((2, 200), np.float32)), "not several"),
    "half the peaks": (_bad(n_peaks=None), "missing: n_peaks"),
    "top_k too large": (_bad(parameters={"top_k": 101}), "parameter 'top_k': 101"),
    "top_k zero": (_bad(parameters={"top_k": 0}), "parameter 'top_k': 0"),
    "top_k text": (_bad(parameters={"top_k": "ten"}), "parameter 'top_k': 'ten'"),
    "unknown parameter": (_bad(parameters={"topk": 3}), "no parameter 'topk'"),
    "min_score out of range": (_bad(parameters={"min_score": 2.0}), "parameter 'min_score'"),
    "negative tolerance": (_bad(parameters={"precursor_tolerance": -1.0}),
                           "parameter 'precursor_tolerance'"),
    "too few peaks": (({"mz": FEW, "intensity": FEW, "n_peaks": np.array([5], np.int32)}, {}),
                      "needs at least 5"),
    "negative intensity": (_bad(intensity=lambda a: -a), "a negative m/z or intensity"),
    "not finite": (_bad(mz=lambda a: np.where(a > 300, np.nan, a).astype(np.float32)),
                   "non-finite"),
    "n_peaks past the padding": (_bad(n_peaks=np.array([500, 3], np.int32)),
                                 "n_peaks 500 is outside"),
    "rows disagree": (_bad(n_peaks=np.array([3], np.int32)), "disagree on the number"),
    "wrong width": (_bad(mz=None, intensity=None, n_peaks=None,
                         spectrum=np.zeros((1, 150), np.float32)), "axis 1 must be 200"),
    "precursor twice": (_bad(precursor_mz=np.array([300, 300], np.float32),
                             parameters={"precursor_mz": 300.0}), "given twice"),
    "bad precursor": (_bad(precursor_mz=np.array([300, -2], np.float32)),
                      "input 'precursor_mz': row 1"),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_client_mistakes_are_invalid_argument_naming_the_problem(triton, case):
    (arrays, parameters), words = MISTAKES[case]
    with pytest.raises(InferenceServerException) as caught:
        triton.infer(LIBRARY, tensors(arrays), parameters=parameters or None)
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert words in caught.value.message()
    assert triton.is_model_ready(LIBRARY)


def test_an_unknown_library_is_not_found(triton):
    with pytest.raises(InferenceServerException) as caught:
        triton.infer("no_such_library", tensors(padded(list(simulate_library(1)))))
    assert caught.value.status() == "StatusCode.NOT_FOUND"
    assert "no_such_library" in caught.value.message()

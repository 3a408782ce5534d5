"""The peak-list contract (zooserve/spectra/peaks.py), in process: good lists in every form a
caller gives them, each kind of bad field named, the limits at their edges, a library's
answer read back, and the client and the Bento wrapping the same error for the same spectrum."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from zooserve.client import ClientError
from zooserve.client.search import search_queries
from zooserve.protocol.errors import ServingError
from zooserve.protocol.limits import MAX_ID_LENGTH
from zooserve.serving.bento_frontend.search_route import read_spectrum, search_answer
from zooserve.spectra.peaks import FLOAT32_MAX, PeakListError, parse_peak_list, read_matches

MZ = [81.1, 109.1, 137.1, 175.1, 239.2, 301.1]
INTENSITY = [12.0, 40.0, 100.0, 8.5, 31.0, 22.0]


def refused(*args, **kwargs) -> PeakListError:
    with pytest.raises(PeakListError) as caught:
        parse_peak_list(*args, **kwargs)
    return caught.value


# good lists


@pytest.mark.parametrize("form", [list, tuple, np.array,
                                  lambda v: np.array(v, dtype=np.float32)])
def test_a_good_list_in_any_form_is_float32(form):
    peaks = parse_peak_list(form(MZ), form(INTENSITY), 301.1, "scan-17")
    assert peaks.mz.dtype == np.float32 and peaks.intensity.dtype == np.float32
    np.testing.assert_array_equal(peaks.mz, np.float32(MZ))
    np.testing.assert_array_equal(peaks.intensity, np.float32(INTENSITY))
    assert peaks.precursor_mz == 301.1 and peaks.id == "scan-17"


def test_optional_fields_and_whole_numbers():
    peaks = parse_peak_list([100, 200, 300], np.array([0, 1, 2], dtype=np.int64))
    assert math.isnan(peaks.precursor_mz) and peaks.id is None
    assert peaks.mz.tolist() == [100.0, 200.0, 300.0]
    assert parse_peak_list(MZ, INTENSITY, precursor_mz=300, id=7).id == 7
    assert parse_peak_list(MZ, INTENSITY, id=np.int64(7)).id == 7
    scalars = parse_peak_list([np.float32(100.5), np.int64(200)], [np.float64(1.0), 2])
    assert scalars.mz.tolist() == [100.5, 200.0] and scalars.intensity.tolist() == [1.0, 2.0]
    # unsorted m/z and zero intensities are the binning's to judge, not the contract's
    assert parse_peak_list([300.0, 100.0], [0.0, 1.0]).mz.tolist() == [300.0, 100.0]
    assert parse_peak_list([], []).mz.shape == (0,)


# bad fields, each named


@pytest.mark.parametrize("mz, intensity, fields, words", [
    (None, INTENSITY, ("mz",), "required: a list of numbers"),
    (MZ, None, ("intensity",), "required: a list of numbers"),
    ("81.1 109.1", INTENSITY, ("mz",), "must be a list of numbers, got a string"),
    (MZ, {"a": 1}, ("intensity",), "must be a list of numbers, got an object"),
    (7.0, INTENSITY, ("mz",), "must be a list of numbers, got a number"),
    (np.zeros((2, 3)), INTENSITY, ("mz",), "one flat list of numbers, not of shape [2, 3]"),
    ([81.1, "2", 3.0], INTENSITY[:3], ("mz[1]",), "not a number (a string)"),
    (MZ[:3], [1.0, 2.0, None], ("intensity[2]",), "not a number (null)"),
    (MZ[:2], [True, 1.0], ("intensity[0]",), "not a number (a boolean)"),
    (MZ[:2], [1.0, [2.0]], ("intensity[1]",), "not a number (a list)"),
    (np.array(["a", "b"]), INTENSITY[:2], ("mz[0]",), "not a number (a string)"),
    ([81.1, math.nan], INTENSITY[:2], ("mz[1]",), "nan is not a finite number"),
    (MZ[:2], [1.0, -math.inf], ("intensity[1]",), "-inf is not a finite number"),
    ([1e39, 2.0], INTENSITY[:2], ("mz[0]",), "1e+39 is not a finite number an FP32 can hold"),
    ([10**400, 2.0], INTENSITY[:2], ("mz[0]",), "an integer beyond float32's range is not"),
    (np.float32([1.0, np.inf]), INTENSITY[:2], ("mz[1]",), "inf is not a finite number"),
    ([-81.1, 2.0], INTENSITY[:2], ("mz[0]",), "-81.1 is negative; m/z values are 0 or more"),
    (MZ[:2], [1, -3], ("intensity[1]",), "-3 is negative; intensities are 0 or more"),
    (MZ[:3], INTENSITY[:2], ("mz", "intensity"), "3 m/z values but 2 intensities"),
])
def test_a_bad_list_is_refused_naming_its_field(mz, intensity, fields, words):
    error = refused(mz, intensity)
    assert error.fields == fields
    assert words in error.problem, error.problem


@pytest.mark.parametrize("precursor, shown", [
    (0, "0"), (-3, "-3"), (math.nan, "nan"), (math.inf, "inf"), (4e38, "4e+38"),
    ("301.1", "a string"), (True, "a boolean"), ([301.1], "a list"),
])
def test_a_precursor_must_be_a_positive_mz(precursor, shown):
    error = refused(MZ, INTENSITY, precursor)
    assert error.fields == ("precursor_mz",)
    assert error.problem == f"{shown} is not a positive m/z (leave it out for none)"


@pytest.mark.parametrize("query_id", [["a"], 1.5, True, {"id": 1}])
def test_an_id_is_a_string_or_an_integer(query_id):
    error = refused(MZ, INTENSITY, id=query_id)
    assert error.fields == ("id",) and error.problem == "must be a string or an integer"


# limits at their edges


def test_the_limits_at_their_edges():
    largest = float(np.float32(FLOAT32_MAX))
    assert parse_peak_list([largest], [largest]).mz[0] == np.float32(FLOAT32_MAX)
    beyond = refused([largest * 1.01], [1.0])
    assert beyond.fields == ("mz[0]",) and "not a finite number" in beyond.problem
    assert parse_peak_list(MZ, INTENSITY, np.nextafter(FLOAT32_MAX, 0)).precursor_mz > 3e38
    assert refused(MZ, INTENSITY, FLOAT32_MAX).fields == ("precursor_mz",)
    assert parse_peak_list(MZ, INTENSITY, id="x" * MAX_ID_LENGTH,
                           max_id_length=MAX_ID_LENGTH).id == "x" * MAX_ID_LENGTH
    long = refused(MZ, INTENSITY, id="x" * (MAX_ID_LENGTH + 1), max_id_length=MAX_ID_LENGTH)
    assert long.problem == f"is longer than {MAX_ID_LENGTH} characters"
    huge = refused(MZ, INTENSITY, id=10**5000, max_id_length=MAX_ID_LENGTH)
    assert huge.problem == long.problem
    assert parse_peak_list(MZ, INTENSITY, id="x" * (MAX_ID_LENGTH + 1)).id  # no limit asked


def test_the_error_names_the_spectrum_as_each_caller_does():
    one = refused([81.1, "x"], INTENSITY[:2])
    assert one.at("spectra[3]", path=True) == "spectra[3].mz[1]: not a number (a string)"
    assert one.at("query 3 ('scan')") == "query 3 ('scan'): mz[1]: not a number (a string)"
    both = refused(MZ[:3], INTENSITY[:2])
    assert both.at("spectra[0]", path=True) == \
        "spectra[0].mz and spectra[0].intensity: 3 m/z values but 2 intensities"
    assert both.at("query 0") == "query 0: 3 m/z values but 2 intensities"
    assert isinstance(one, ValueError)


# the answer side


def answer(rows: list[list[tuple[str, float]]]):
    width = max(len(row) for row in rows)
    ids = np.full((len(rows), width), b"", dtype=object)
    scores = np.zeros((len(rows), width), dtype=np.float32)
    metadata = np.full((len(rows), width), b"", dtype=object)
    for r, row in enumerate(rows):
        for c, (entry, score) in enumerate(row):
            ids[r, c], scores[r, c] = entry.encode(), score
            metadata[r, c] = json.dumps({"id": entry, "precursor_mz": 300.0 + c}).encode()
    return ids, scores, metadata


def test_matches_are_read_best_first_without_the_padding():
    ids, scores, metadata = answer([[("a", 0.9), ("b", 0.5)], [("c", 0.75)], []])
    found = read_matches(ids, scores, metadata, 3)
    assert found == [[("a", 0.8999999761581421, {"id": "a", "precursor_mz": 300.0}),
                      ("b", 0.5, {"id": "b", "precursor_mz": 301.0})],
                     [("c", 0.75, {"id": "c", "precursor_mz": 300.0})], []]
    with pytest.raises(ValueError, match="for 2 queries"):
        read_matches(ids, scores, metadata, 2)
    metadata[0, 0] = b"{not json"
    with pytest.raises(ValueError):
        read_matches(ids, scores, metadata, 3)


def test_the_bento_answer_is_the_same_matches():
    class Response:
        outputs = dict(zip(("ids", "scores", "metadata"), answer([[("a", 0.5)], []]),
                           strict=True))

    body = search_answer(["scan-1", 7], {"name": "lib"}, Response())
    assert body == {"library": {"name": "lib"}, "results": [
        {"query": 0, "id": "scan-1",
         "matches": [{"id": "a", "score": 0.5, "precursor_mz": 300.0}]},
        {"query": 1, "id": 7, "matches": []}]}


# the client and the Bento wrap the same error


@pytest.mark.parametrize("spectrum", [
    {"mz": [81.1, math.nan], "intensity": [1.0, 2.0]},
    {"mz": [81.1, 109.1], "intensity": [1.0, "2"]},
    {"mz": [81.1, 109.1], "intensity": [1.0, -2.0]},
    {"mz": [81.1, 109.1, 137.1], "intensity": [1.0, 2.0]},
    {"mz": "81.1", "intensity": [1.0]},
    {"mz": MZ, "intensity": INTENSITY, "precursor_mz": -3},
    {"mz": MZ, "intensity": INTENSITY, "id": ["a"]},
])
def test_the_client_and_the_bento_give_the_same_message(spectrum):
    with pytest.raises(ClientError) as client:
        search_queries([spectrum])
    with pytest.raises(ServingError) as bento:
        read_spectrum(0, spectrum)
    error = refused(spectrum["mz"], spectrum["intensity"], spectrum.get("precursor_mz"),
                    spectrum.get("id"))
    assert client.value.code is None
    assert str(client.value) == error.at("query 0")
    assert bento.value.message == error.at("spectra[0]", path=True)
    assert str(client.value).endswith(error.problem) and bento.value.message.endswith(
        error.problem)
    if len(error.fields) == 1:  # one field: the same words after each one's spectrum name
        assert str(client.value).removeprefix("query 0: ") == \
            bento.value.message.removeprefix("spectra[0].")

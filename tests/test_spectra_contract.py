"""The binning contract (zooserve/spectra/binning.py) that training and serving share, MGF files,
and the zoo's spectrum simulator: one function bins for both sides, the shipped spectra models
state the contract in their card and ONNX metadata, and bad peak lists are refused with the
reason."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from tests.helpers.paths import MODELS
from zooserve.spectra.binning import (
    METADATA_KEY,
    ZOO_BINNING,
    Binning,
    PeakProblem,
    bin_padded,
    bin_peaks,
    pad_peaks,
)
from zooserve.spectra.mgf import MgfError, Spectrum, read_mgf, write_mgf
from zooserve.spectra.simulator import (
    noisy_copy,
    simulate_library,
    simulate_molecules,
    zoo_chemistry,
)
from zooserve.training.data import spectra as training_spectra


@pytest.mark.parametrize("name", ["spectra_embedding", "spectra_similarity"])
def test_shipped_spectra_models_state_the_contract(name):
    folder = MODELS / name / "1"
    card = json.loads((folder / "card.json").read_text())
    assert Binning.from_dict(card[METADATA_KEY]) == ZOO_BINNING
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    in_onnx = json.loads(session.get_modelmeta().custom_metadata_map[METADATA_KEY])
    assert in_onnx == card[METADATA_KEY]
    assert all(i.shape[-1] == ZOO_BINNING.bins for i in session.get_inputs())


def test_training_and_serving_bin_an_mgf_file_identically(tmp_path):
    """The training loader's vectors (MGF -> Dataset) and the server's batch binning of the
    same peaks, zero-padded as a request carries them, are the same bytes."""
    library = list(simulate_library(40, seed=3))
    library[5] = Spectrum(library[5].mz[:3], library[5].intensity[:3], library[5].fields)
    path = tmp_path / "pairs.mgf"
    write_mgf(path, library)
    names = [s.id for s in library]
    scores = [[1.0 if i == j else 0.5 for j in range(len(names))] for i in range(len(names))]
    path.with_suffix(".json").write_text(json.dumps({"ids": names, "scores": scores}))
    dataset = training_spectra.load_spectra_files(path, seed=0)
    kept = training_spectra.read_peaks(path)
    assert names[5] not in kept and len(kept) == 39  # too few peaks: left out, as the server
    read_back = [s for s in read_mgf(path) if s.id in kept]
    served = bin_padded(*pad_peaks(read_back))
    by_id = {s.id: row for s, row in zip(read_back, served, strict=True)}
    trained = np.concatenate([dataset.x_train[0], dataset.x_test[0],
                              dataset.extras["test_spectra"]])
    served_rows = {row.tobytes() for row in by_id.values()}
    assert all(row.tobytes() in served_rows for row in trained)
    single = np.stack([bin_peaks(s.mz, s.intensity) for s in read_back])
    assert single.tobytes() == served.tobytes()


def test_the_vector_follows_the_contract():
    mz = [5.0, 10.0, 14.94, 14.96, 500.0, 999.99, 1000.5, 1200.0]
    intensity = [9.0, 4.0, 16.0, 1.0, 100.0, 25.0, 49.0, 64.0]
    vector = bin_peaks(mz, intensity)
    expected = np.zeros(200)
    expected[0] = 4.0  # 10 and 14.94 share bin 0: the larger sqrt
    expected[1] = 1.0  # 14.96 is past 10 + 4.95
    expected[int((500.0 - 10) // 4.95)] = 10.0
    expected[199] = 5.0  # 1000.5 is past the last bin, 5 before the first
    np.testing.assert_allclose(vector, expected / 10.0, rtol=1e-6)
    assert vector.dtype == np.float32 and vector.max() == 1.0


def test_padding_past_n_peaks_is_ignored_whatever_it_holds():
    spectrum = next(simulate_library(1, seed=4))
    mz, intensity, n_peaks = pad_peaks([spectrum])
    garbage_mz = np.concatenate([mz, [[np.nan, -5.0, 300.0]]], axis=1).astype(np.float32)
    garbage_int = np.concatenate([intensity, [[np.inf, 1e9, -1.0]]], axis=1).astype(np.float32)
    np.testing.assert_array_equal(bin_padded(garbage_mz, garbage_int, n_peaks),
                                  bin_padded(mz, intensity, n_peaks))


def test_peaks_are_read_as_float32_so_both_sides_agree_at_bin_edges():
    edge = 10.0 + 4.95 * 37  # a bin edge that float32 rounds below
    near = np.nextafter(np.float64(np.float32(edge)), 0)
    peaks = [near, 100.0, 200.0, 300.0, 400.0]
    as_float64 = bin_peaks(np.array(peaks, np.float64), np.ones(5))
    as_float32 = bin_peaks(np.array(peaks, np.float32), np.ones(5, np.float32))
    np.testing.assert_array_equal(as_float64, as_float32)


@pytest.mark.parametrize(("mz", "intensity", "n_peaks", "words"), [
    ([[100, 200, 300, 400, np.nan]], [[1, 1, 1, 1, 1]], [5], "spectrum 0, peak 4: a non-finite"),
    ([[100, 200, 300, 400, 500]], [[1, 1, -1, 1, 1]], [5], "spectrum 0, peak 2: a negative"),
    ([[100, 200, 300, 400, 500]], [[1, 1, 1, 1, 1]], [6], "n_peaks 6 is outside 0..5"),
    ([[100, 200, 300, 400, 5]], [[1, 1, 1, 1, 1]], [5], "has 4 peaks with intensity above 0"),
    ([[100, 200, 300, 400, 500]], [[1, 1, 0, 1, 1]], [5], "needs at least 5"),
    ([[100, 200]], [[1, 1, 1]], [2], "differ"),
    ([[100, 200]], [[1, 1]], [2, 2], "n_peaks has 2 values for 1 spectra"),
])
def test_bad_peak_lists_are_refused_naming_the_problem(mz, intensity, n_peaks, words):
    with pytest.raises(PeakProblem, match=words.replace("(", r"\(")):
        bin_padded(np.array(mz, np.float32), np.array(intensity, np.float32), np.array(n_peaks))


def test_the_problem_names_the_row_at_fault():
    good = next(simulate_library(1, seed=2))
    mz, intensity, n_peaks = pad_peaks([good, good, good])
    intensity[2, 1] = -3
    with pytest.raises(PeakProblem) as caught:
        bin_padded(mz, intensity, n_peaks)
    assert caught.value.row == 2 and "spectrum 2, peak 1" in str(caught.value)


def test_unsupported_binning_settings_are_refused():
    with pytest.raises(ValueError, match="intensity_scaling 'log'"):
        Binning(intensity_scaling="log")
    with pytest.raises(ValueError, match="out of range"):
        Binning(mz_min=100, mz_max=50)


def test_mgf_round_trip_keeps_fields_and_peaks(tmp_path):
    spectra = list(simulate_library(5, seed=9))
    spectra[0].fields["SMILES"] = "CCO"
    path = tmp_path / "library.mgf.gz"
    assert write_mgf(path, spectra) == 5
    back = list(read_mgf(path))
    assert [s.id for s in back] == [s.id for s in spectra]
    assert back[0].fields["SMILES"] == "CCO"
    assert back[0].precursor_mz == pytest.approx(float(spectra[0].fields["PEPMASS"]))
    np.testing.assert_allclose(back[3].mz, spectra[3].mz, atol=1e-4)
    np.testing.assert_array_equal(bin_peaks(back[3].mz, back[3].intensity),
                                  bin_peaks(spectra[3].mz, spectra[3].intensity))


@pytest.mark.parametrize(("text", "words"), [
    ("BEGIN IONS\nTITLE=a\n100 1\nBEGIN IONS\n", r"x.mgf:4: BEGIN IONS inside a spectrum"),
    ("END IONS\n", r"x.mgf:1: END IONS without BEGIN IONS"),
    ("BEGIN IONS\n100 1\nhello there\nEND IONS\n", r"x.mgf:3: 'hello there' is neither"),
    ("BEGIN IONS\n100 1\n", "no END IONS"),
])
def test_malformed_mgf_names_the_line(tmp_path, text, words):
    path = tmp_path / "x.mgf"
    path.write_text(text)
    with pytest.raises(MgfError, match=words):
        list(read_mgf(path))


def test_the_simulator_uses_the_training_chemistry():
    """Library spectra come from the chemistry the shipped models were trained on: the
    training data set's own spectra are simulate_molecules' with it."""
    dataset = training_spectra.load_synthetic_spectra(train_pairs=10, test_pairs=10)
    replay = simulate_molecules(np.random.default_rng(0), 1200)
    assert replay.chemistry.peak_bins.tobytes() == zoo_chemistry().peak_bins.tobytes()
    rows = {row.tobytes() for row in replay.spectra}
    assert all(row.tobytes() in rows for row in dataset.x_train[0])


def test_simulated_libraries_are_reproducible_and_bin_back_to_their_spectra():
    first = list(simulate_library(30, seed=5, chunk=7))
    again = list(simulate_library(30, seed=5, chunk=7))
    assert [s.fields for s in first] == [s.fields for s in again]
    assert all(np.array_equal(a.mz, b.mz) for a, b in zip(first, again, strict=True))
    assert len({s.id for s in first}) == 30
    other = list(simulate_library(30, seed=6, chunk=7))
    assert not np.array_equal(first[0].mz, other[0].mz)


def test_a_noisy_copy_stays_close_to_its_original_but_is_not_it():
    rng = np.random.default_rng(0)
    for original in simulate_library(20, seed=8):
        copy = noisy_copy(original, rng)
        a, b = bin_peaks(original.mz, original.intensity), bin_peaks(copy.mz, copy.intensity)
        cosine = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))
        assert 0.8 < cosine < 1.0
        assert copy.fields["ORIGINAL"] == original.id

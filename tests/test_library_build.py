"""`zooserve library build`: a library bundle from an MGF file, refused with the reason
before anything is written, never left half-written; and the bundles it writes, served by a
real `zooserve serve`: exact, ANN (faiss) and Qdrant backends answer the same top-k, an
embedding model whose file changed makes its libraries UNAVAILABLE with the reason, and
searches batch."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from tests.helpers.paths import MODELS, ROOT
from tests.helpers.search_tensors import padded, tensors
from tests.helpers.server import run_server
from zooserve.serving.search import library_build
from zooserve.serving.search.library import EMBEDDINGS_FILE, Library
from zooserve.serving.search.library_build import LibraryBuildError, build_library
from zooserve.spectra.mgf import Spectrum, write_mgf
from zooserve.spectra.simulator import noisy_copy, simulate_library

COUNT = 3000


@pytest.fixture(scope="module")
def library_mgf(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mgf") / "library.mgf"
    write_mgf(path, simulate_library(COUNT, seed=21))
    return path


def _repository(tmp: Path) -> Path:
    models = tmp / "models"
    for name in ("spectra_embedding", "penguins"):
        shutil.copytree(MODELS / name, models / name)
    return models


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def zooserve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zooserve", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300)


def test_the_cli_builds_a_versioned_bundle(tmp_path, library_mgf):
    models = _repository(tmp_path)
    done = zooserve("library", "build", "--models", str(models), "--spectra", str(library_mgf),
                    "--name", "mine")
    assert done.returncode == 0, done.stderr
    assert f"library mine version 1: {COUNT} spectra" in done.stdout
    assert f"embedding: {COUNT} spectra" in done.stderr  # the progress line
    library = Library.open(models / "mine" / "1")
    assert library.count == COUNT and library.embeddings.shape == (COUNT, 200)
    assert isinstance(library.embeddings, np.memmap)
    np.testing.assert_allclose(np.linalg.norm(library.embeddings, axis=1), 1.0, atol=1e-5)
    card = json.loads((models / "spectra_embedding" / "1" / "card.json").read_text())
    assert library.manifest["embedding_model"] == {
        "name": "spectra_embedding", "version": 1, "sha256": card["onnx"]["sha256"]}
    assert library.manifest["binning"] == card["input_binning"]
    assert library.manifest["source"]["spectra_read"] == COUNT
    assert library.entry(7)["id"] == "synthetic-0000007"
    again = zooserve("library", "build", "--models", str(models), "--spectra",
                     str(library_mgf), "--name", "mine")
    assert again.returncode == 0 and (models / "mine" / "2" / "library.json").is_file()


def test_a_changed_file_in_a_bundle_is_refused(tmp_path, library_mgf):
    models = _repository(tmp_path)
    build_library(models, "mine", library_mgf, progress=None)
    embeddings = models / "mine" / "1" / EMBEDDINGS_FILE
    data = bytearray(embeddings.read_bytes())
    data[-1] ^= 1
    embeddings.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="embeddings.npy has sha256 .* changed or damaged"):
        Library.open(models / "mine" / "1")


def test_spectra_the_contract_refuses_are_skipped_and_counted(tmp_path):
    spectra = list(simulate_library(20, seed=2))
    spectra[3] = Spectrum(spectra[3].mz[:2], spectra[3].intensity[:2], spectra[3].fields)
    bad = spectra[5].intensity.copy()
    bad[0] = -1
    spectra[5] = Spectrum(spectra[5].mz, bad, spectra[5].fields)
    path = tmp_path / "some.mgf"
    write_mgf(path, spectra)
    models = _repository(tmp_path)
    report = build_library(models, "some", path, progress=None)
    assert report.count == 18 and report.skipped == {"too few peaks": 1, "invalid peaks": 1}
    manifest = Library.open(report.folder).manifest
    assert manifest["source"]["skipped"] == report.skipped
    assert any("synthetic-0000003" in e for e in manifest["source"]["skipped_examples"])


def _refusal_cases(tmp_path: Path, library_mgf: Path):
    duplicate = tmp_path / "dup.mgf"
    twice = list(simulate_library(3, seed=2))
    write_mgf(duplicate, [twice[0], twice[1], twice[0]])
    broken = tmp_path / "broken.mgf"
    broken.write_text("BEGIN IONS\nTITLE=a\n100 1\n")
    none_usable = tmp_path / "tiny.mgf"
    write_mgf(none_usable, [Spectrum(np.array([100.0], np.float32),
                                     np.array([1.0], np.float32), {"TITLE": "t"})])
    return {
        "unknown model": (dict(spectra=library_mgf, model="nope"), "no model 'nope'"),
        "not a spectra model": (dict(spectra=library_mgf, model="penguins"),
                                "has no input_binning in its card"),
        "name of a model": (dict(spectra=library_mgf, name="penguins"), "is a model"),
        "bad name": (dict(spectra=library_mgf, name="../x"), "not a valid model name"),
        "qdrant path": (dict(spectra=library_mgf, backend="qdrant", qdrant="/tmp/q"),
                        "takes the URL"),
        "missing file": (dict(spectra=tmp_path / "none.mgf"), "does not exist"),
        "duplicate ids": (dict(spectra=duplicate), "has id 'synthetic-0000000', as spectrum 0"),
        "malformed": (dict(spectra=broken), "no END IONS"),
        "nothing usable": (dict(spectra=none_usable), "no spectrum the binning accepts"),
        "unknown version": (dict(spectra=library_mgf, model_version=9), "has no version 9"),
    }


CASES = ["unknown model", "not a spectra model", "name of a model", "bad name", "qdrant path",
         "missing file", "duplicate ids", "malformed", "nothing usable", "unknown version"]


@pytest.mark.parametrize("case", CASES)
def test_a_refused_build_writes_nothing(tmp_path, library_mgf, case):
    models = _repository(tmp_path)
    before = _snapshot(models)
    arguments, words = _refusal_cases(tmp_path, library_mgf)[case]
    arguments = {"name": "mine", **arguments}
    with pytest.raises((LibraryBuildError, ValueError), match=words):
        build_library(models, progress=None, **arguments)
    assert _snapshot(models) == before
    assert sorted(p.name for p in models.iterdir()) == ["penguins", "spectra_embedding"]


def test_the_cli_says_why_in_one_line(tmp_path, library_mgf):
    models = _repository(tmp_path)
    done = zooserve("library", "build", "--models", str(models), "--spectra", str(library_mgf),
                    "--name", "mine", "--model", "penguins")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "zooserve library build: error: model 'penguins' version 1 has no input_binning in "
        "its card: it does not say how spectra become its input; nothing was written"]


def test_an_interrupted_build_leaves_nothing_behind(tmp_path, library_mgf, monkeypatch):
    """Ctrl-C while spectra are embedded (after a batch is written): no staging folder, no
    version, no library folder."""
    models = _repository(tmp_path)
    before = _snapshot(models)
    real = library_build.read_mgf

    def interrupted(path):
        for number, spectrum in enumerate(real(path)):
            if number == 1500:
                raise KeyboardInterrupt
            yield spectrum

    monkeypatch.setattr(library_build, "read_mgf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_library(models, "mine", library_mgf, batch=256, progress=None)
    assert _snapshot(models) == before and not (models / "mine").exists()
    monkeypatch.setattr(library_build, "read_mgf", real)
    build_library(models, "mine", library_mgf, progress=None)  # an existing library folder:
    monkeypatch.setattr(library_build, "read_mgf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        build_library(models, "mine", library_mgf, batch=256, progress=None)
    assert sorted(p.name for p in (models / "mine").iterdir()) == ["1"]  # no staging left


@pytest.fixture(scope="module")
def three_backends(tmp_path_factory, library_mgf):
    """One repository holding the same library built for each backend, served."""
    tmp = tmp_path_factory.mktemp("backends")
    models = _repository(tmp)
    reports = {kind: build_library(models, f"lib_{kind}", library_mgf, backend=kind,
                                   progress=None)
               for kind in ("exact", "ann", "qdrant")}
    # Waiting up to 50 ms for six queued requests makes the batching test's batches certain.
    (models / "lib_exact" / "serving.json").write_text(json.dumps(
        {"dynamic_batching": {"max_queue_delay_us": 50000, "preferred_batch_sizes": [6]}}))
    with run_server(models, tmp) as server:
        client = grpcclient.InferenceServerClient(server.url)
        yield server, client, reports
        client.close()


def _queries(count: int, seed: int):
    library = list(simulate_library(COUNT, seed=21))
    rng = np.random.default_rng(seed)
    return [noisy_copy(library[i], rng) for i in rng.choice(COUNT, count, replace=False)]


def _ask(client, model: str, spectra, **parameters):
    arrays = padded(spectra)
    if "precursor_mz" in parameters:
        arrays["precursor_mz"] = parameters.pop("precursor_mz")
    result = client.infer(model, tensors(arrays), parameters=parameters)
    return result.as_numpy("ids").astype(str), result.as_numpy("scores")


def test_the_ann_build_measured_its_recall(three_backends):
    _, _, reports = three_backends
    ann = reports["ann"].backend
    assert ann["kind"] == "ann" and ann["recall_at_10"] >= 0.99
    assert reports["qdrant"].backend["kind"] == "qdrant"
    print(f"recall@10: ann {ann['recall_at_10']}, qdrant {reports['qdrant'].backend}")


@pytest.mark.parametrize("filters", ["none", "window", "min_score"])
def test_exact_ann_and_qdrant_return_the_same_top_k(three_backends, filters):
    _, client, _ = three_backends
    queries = _queries(40, seed=3)
    parameters: dict = {"top_k": 10}
    if filters == "window":
        parameters["precursor_mz"] = np.array([float(q.fields["PEPMASS"]) for q in queries],
                                              np.float32)
        parameters["precursor_tolerance"] = 45.0
    if filters == "min_score":
        parameters["min_score"] = 0.7
    answers = {kind: _ask(client, f"lib_{kind}", queries, **dict(parameters))
               for kind in ("exact", "ann", "qdrant")}
    ids, scores = answers["exact"]
    assert (ids[:, 0] == [q.fields["ORIGINAL"] for q in queries]).mean() >= 0.95
    for kind in ("ann", "qdrant"):
        np.testing.assert_array_equal(answers[kind][0], ids, err_msg=kind)
        np.testing.assert_allclose(answers[kind][1], scores, atol=1e-5, err_msg=kind)
    if filters == "min_score":
        assert (ids == "").any() and np.nanmin(scores) >= 0.7


def test_requests_of_different_k_batch_together(three_backends):
    server, client, _ = three_backends
    before = client.get_inference_statistics("lib_exact").model_stats[0]
    query = _queries(1, seed=4)
    shapes: dict[int, tuple] = {}

    def ask(k: int) -> None:
        own = grpcclient.InferenceServerClient(server.url)
        for _ in range(5):
            ids, scores = _ask(own, "lib_exact", query, top_k=k)
            shapes[k] = (ids.shape, scores.shape)
        own.close()

    threads = [threading.Thread(target=ask, args=(k,)) for k in (1, 2, 5, 9, 20, 33)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert shapes == {k: ((1, k), (1, k)) for k in (1, 2, 5, 9, 20, 33)}
    after = client.get_inference_statistics("lib_exact").model_stats[0]
    searches = after.inference_count - before.inference_count
    runs = after.execution_count - before.execution_count
    print(f"{searches} searches in {runs} runs")
    assert searches == 30 and runs < searches


def test_a_library_whose_embedding_model_changed_is_refused(tmp_path, library_mgf):
    """The embedding model's file is replaced (and its card updated, so the model itself
    loads): the library's embeddings no longer match the queries', so it is UNAVAILABLE with
    the reason and the rest of the repository serves."""
    import hashlib

    import onnx

    models = _repository(tmp_path)
    build_library(models, "mine", library_mgf, progress=None)
    folder = models / "spectra_embedding" / "1"
    proto = onnx.load(str(folder / "model.onnx"))
    proto.doc_string = "retrained"
    onnx.save(proto, str(folder / "model.onnx"))
    card = json.loads((folder / "card.json").read_text())
    card["onnx"]["sha256"] = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    card["files"]["model.onnx"] = card["onnx"]["sha256"]
    (folder / "card.json").write_text(json.dumps(card))
    with run_server(models, tmp_path) as server:
        client = grpcclient.InferenceServerClient(server.url)
        index = {m.name: m for m in client.get_model_repository_index().models}
        assert index["mine"].state == "UNAVAILABLE"
        assert "was built with embedding model 'spectra_embedding' version 1" in \
            index["mine"].reason
        assert "rebuild the library" in index["mine"].reason
        assert client.is_server_ready() and client.is_model_ready("spectra_embedding")
        client.close()

"""The optimised-model cache with real ONNX Runtime sessions: the first session writes the
optimised graph, the next one loads it and answers the same; a damaged entry is replaced; an
unusable folder means no cache, not a failure."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.helpers.paths import MODELS
from tests.helpers.server import run_server
from zooserve.serving.onnx_sessions import CPU, _create_session, optimized_model_cache
from zooserve.serving.settings import Settings

DIGITS = MODELS / "digits" / "1" / "model.onnx"
PENGUINS = MODELS / "penguins" / "1" / "model.onnx"


def _answer(session) -> np.ndarray:
    image = np.random.default_rng(1).uniform(0, 255, (2, 28, 28, 1)).astype(np.float32)
    (probabilities,) = session.run(None, {"image": image})
    return probabilities


def test_the_second_session_loads_the_cached_graph_and_answers_the_same(tmp_path):
    plain = _answer(_create_session(str(DIGITS), [CPU], 1))
    assert optimized_model_cache(tmp_path, DIGITS, [CPU])[0] is None
    first = _answer(_create_session(str(DIGITS), [CPU], 1, cache_dir=tmp_path))
    entries = list(tmp_path.iterdir())
    assert len(entries) == 1 and entries[0].suffix == ".onnx"  # no temporary file left
    cached, write_to = optimized_model_cache(tmp_path, DIGITS, [CPU])
    assert cached == entries[0] and write_to is None
    second = _answer(_create_session(str(DIGITS), [CPU], 1, cache_dir=tmp_path))
    np.testing.assert_allclose(first, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second, plain, rtol=1e-5, atol=1e-6)


def test_the_key_changes_with_the_model_and_the_providers(tmp_path):
    digits, _ = optimized_model_cache(tmp_path, DIGITS, [CPU])
    _create_session(str(DIGITS), [CPU], 1, cache_dir=tmp_path)
    assert optimized_model_cache(tmp_path, PENGUINS, [CPU])[0] is None
    assert optimized_model_cache(tmp_path, DIGITS, ["CUDAExecutionProvider", CPU])[0] is None
    assert optimized_model_cache(tmp_path, DIGITS, [CPU])[0] is not None


def test_a_damaged_entry_is_replaced(tmp_path):
    _create_session(str(DIGITS), [CPU], 1, cache_dir=tmp_path)
    (entry,) = tmp_path.iterdir()
    entry.write_bytes(b"not an onnx model")
    answer = _answer(_create_session(str(DIGITS), [CPU], 1, cache_dir=tmp_path))
    assert not entry.exists()  # removed; the next session writes it again
    np.testing.assert_allclose(answer, _answer(_create_session(str(DIGITS), [CPU], 1)),
                               rtol=1e-5, atol=1e-6)
    _create_session(str(DIGITS), [CPU], 1, cache_dir=tmp_path)
    assert entry.exists() and entry.stat().st_size > 1000


def test_an_unusable_cache_folder_means_no_cache(tmp_path, caplog):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    session = _create_session(str(DIGITS), [CPU], 1, cache_dir=blocked / "cache")
    assert _answer(session).shape == (2, 10)
    assert "no optimised-model cache" in caplog.text


def test_the_setting_reads_off_and_a_folder():
    assert Settings.from_sources({"cache_dir": "off"}, {}).cache_dir is None
    chosen = Settings.from_sources({}, {"ZOOSERVE_CACHE_DIR": "/srv/cache"}).cache_dir
    assert chosen == Path("/srv/cache")
    assert Settings.from_sources({}, {}).cache_dir.parts[-2:] == ("zooserve", "onnxruntime")


def test_a_server_fills_the_cache_then_starts_from_it(tmp_path, copy_model):
    repo = copy_model("digits")
    copy_model("penguins", repo=repo)
    cache = tmp_path / "cache"
    with run_server(repo, tmp_path, "--cache-dir", str(cache)):
        pass
    first = sorted(cache.iterdir())
    assert len(first) == 2
    with run_server(repo, tmp_path, "--cache-dir", str(cache)) as server:
        log = server.log()
    assert sorted(cache.iterdir()) == first
    assert "loaded digits version 1" in log and "ignoring the cached" not in log

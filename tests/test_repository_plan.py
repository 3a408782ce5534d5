"""The repository's plan/apply, in process, with a fake model kind: a table entry keyed by a
file name of its own ("fake.model") whose load reads a line of text and needs no ONNX Runtime.
New versions load, changed ones reload, removed ones retire, a broken one is reported while
the good one serves, and a retiring version is closed only once its requests are answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from zooserve.repository.layout import ModelEntry, record_files
from zooserve.serving.load_options import LoadOptions
from zooserve.serving.loaded_model import TensorSpec
from zooserve.serving.model_control import EXPLICIT, ModelControl
from zooserve.serving.repository import READY, UNAVAILABLE, UNLOADING, ModelRepository
from zooserve.serving.serving_config import ServingConfig
from zooserve.serving.statistics import ModelStatistics

FAKE_FILE = "fake.model"


class FakeModel:
    """What the repository reads of a served model, made from one line of text."""

    def __init__(self, entry: ModelEntry, text: str, options: LoadOptions) -> None:
        self.name, self.version, self.path = entry.name, entry.version, entry.path
        self.text = text
        self.device, self.providers, self.intra_op_threads = "CPU", ["Fake"], 1
        self.inputs = self.outputs = [TensorSpec("x", "FP32", (-1,))]
        self.max_batch_size = 0
        self.config = ServingConfig()
        self.run_ns = self.row_ns = 0
        self.inline_below_ns = options.inline_below_ns
        self.max_queue_size = options.max_queue_size
        self.warm_up_problem = ""
        self.statistics = ModelStatistics()


class FakeKind:
    """A model kind for the table: counts its loads; a file saying "broken" fails to load."""

    def __init__(self) -> None:
        self.loads: list[tuple[str, int, str]] = []

    def __call__(self, entry: ModelEntry, options: LoadOptions,
                 verified: Mapping[str, str]) -> FakeModel:
        assert FAKE_FILE in verified  # the repository checked the file before the load
        text = entry.path.read_text()
        self.loads.append((entry.name, entry.version, text))
        if text == "broken":
            raise ValueError("not a fake model")
        return FakeModel(entry, text, options)


def write_version(root: Path, name: str, version: int, text: str) -> None:
    """A version folder holding the fake file, its card recording its sha256; written beside
    and renamed into place, so every write is a new file (a new stamp)."""
    folder = root / name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    staged = folder / f".{FAKE_FILE}.new"
    staged.write_text(text)
    staged.replace(folder / FAKE_FILE)
    record_files(folder)


def remove_version(root: Path, name: str, version: int) -> None:
    folder = root / name / str(version)
    for path in folder.iterdir():
        path.unlink()
    folder.rmdir()


def change(repository: ModelRepository, settled: bool = False) -> list:
    """One look at the folder and its switch, as ModelControl makes it; the versions retired."""
    plan = repository.plan(None, wait_for_settled_files=settled)
    return repository.apply(plan, [repository.attempt(e, s) for e, s in plan.load])


def rows(repository: ModelRepository) -> list[tuple[str, int, str]]:
    return [(r.name, r.version, r.state) for r in repository.index()]


@pytest.fixture
def kind() -> FakeKind:
    return FakeKind()


@pytest.fixture
def repository(tmp_path: Path, kind: FakeKind) -> ModelRepository:
    return ModelRepository(tmp_path, {FAKE_FILE: kind}, LoadOptions(device="cpu"))


def test_a_new_version_is_loaded_and_serves(tmp_path, kind, repository):
    write_version(tmp_path, "m", 1, "one")
    repository.load()
    assert repository.get("m").text == "one"
    write_version(tmp_path, "m", 2, "two")
    retired = change(repository)
    assert retired == []
    assert repository.versions("m") == [1, 2]
    assert repository.get("m").text == "two"  # no version named: the highest
    assert repository.get("m", "1").text == "one"
    assert kind.loads == [("m", 1, "one"), ("m", 2, "two")]
    assert repository.ready


def test_a_changed_version_is_reloaded_and_the_old_copy_retires(tmp_path, kind, repository):
    write_version(tmp_path, "m", 1, "one")
    repository.load()
    old = repository.get("m")
    write_version(tmp_path, "m", 1, "one, changed")
    assert change(repository) == [old]
    new = repository.get("m")
    assert new is not old and new.text == "one, changed"
    assert old in repository.retiring
    assert rows(repository) == [("m", 1, READY)]  # the served copy, not the retiring one


def test_the_same_contents_under_a_new_stamp_are_not_loaded_again(tmp_path, kind, repository):
    write_version(tmp_path, "m", 1, "one")
    repository.load()
    served = repository.get("m")
    write_version(tmp_path, "m", 1, "one")  # a new file, the same bytes
    assert change(repository) == []
    assert repository.get("m") is served
    assert len(kind.loads) == 1


def test_a_removed_version_retires_after_two_looks_when_polling(tmp_path, repository):
    write_version(tmp_path, "m", 1, "one")
    write_version(tmp_path, "m", 2, "two")
    repository.load()
    two = repository.get("m", 2)
    remove_version(tmp_path, "m", 2)
    assert change(repository, settled=True) == []  # one miss may be a rename in between
    assert repository.versions("m") == [1, 2]
    assert change(repository, settled=True) == [two]
    assert repository.versions("m") == [1]
    assert rows(repository) == [("m", 1, READY), ("m", 2, UNLOADING)]


def test_a_broken_version_is_unavailable_while_the_good_one_serves(tmp_path, repository):
    write_version(tmp_path, "m", 1, "one")
    write_version(tmp_path, "m", 2, "broken")
    repository.load()
    assert repository.get("m").version == 1
    index = {(r.name, r.version): r for r in repository.index()}
    assert index["m", 1].state == READY
    assert index["m", 2].state == UNAVAILABLE
    assert "ValueError: not a fake model" in index["m", 2].reason
    # A served version whose files break keeps serving its earlier copy, and says so.
    served = repository.get("m", 1)
    write_version(tmp_path, "m", 1, "broken")
    assert change(repository) == []
    assert repository.get("m", 1) is served
    index = {(r.name, r.version): r for r in repository.index()}
    assert index["m", 1].state == READY
    assert "the copy loaded earlier serves" in index["m", 1].reason
    assert repository.ready


def test_the_kinds_table_decides_what_a_folder_is(tmp_path, kind, caplog):
    other = FakeKind()
    repository = ModelRepository(tmp_path, {FAKE_FILE: kind, "other.model": other})
    write_version(tmp_path, "both", 1, "fake first")
    (tmp_path / "both" / "1" / "other.model").write_text("never read")
    write_version(tmp_path, "neither", 1, "x")
    (tmp_path / "neither" / "1" / FAKE_FILE).unlink()
    repository.load()
    assert repository.names() == ["both"]
    assert (kind.loads, other.loads) == ([("both", 1, "fake first")], [])
    assert "skipping" in caplog.text and f"no {FAKE_FILE} or other.model in it" in caplog.text


def test_a_retiring_version_is_closed_only_once_its_requests_are_answered(tmp_path, repository):
    write_version(tmp_path, "m", 1, "one")
    repository.load()
    old = repository.get("m")
    in_flight = {old: 2}
    closed = []
    repository.retiring.answer_to(lambda model: in_flight.get(model, 0), closed.append)
    write_version(tmp_path, "m", 1, "one, again")
    assert change(repository) == [old]  # no event loop here: nothing watches yet
    assert repository.retiring.close_answered() == []
    assert closed == [] and old in repository.retiring
    in_flight[old] = 0
    assert repository.retiring.close_answered() == [old]
    assert closed == [old] and old not in repository.retiring
    assert repository.retiring.close_answered() == []  # closed once


def test_an_unloaded_model_is_closed_by_the_watcher_once_answered(tmp_path, repository):
    """Through ModelControl, as the DataPlane wires it: its count and its close go to the
    repository's retiring versions, which close the version on the event loop."""
    write_version(tmp_path, "m", 1, "one")
    repository.load()
    model = repository.get("m")
    in_flight = {model: 1}
    closed = []

    async def scenario() -> None:
        control = ModelControl(repository, EXPLICIT, release=closed.append,
                               in_flight=lambda m: in_flight.get(m, 0))
        await control.unload("m")
        assert rows(repository) == [("m", 1, UNLOADING)]
        await asyncio.sleep(repository.retiring.check_s * 5)
        assert closed == []  # a request still in flight holds it
        in_flight[model] = 0
        deadline = time.monotonic() + 5
        while not closed and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        await control.stop()

    asyncio.run(scenario())
    assert closed == [model]
    assert model not in repository.retiring
    assert rows(repository) == [("m", 1, UNAVAILABLE)]  # unloaded, nothing left to answer

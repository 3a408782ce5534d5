"""publish_version, the one way a version folder is written: numbering, the overwrite rule,
clean-up on failure, and publishers racing for the same model folder. In-process, on real
folders; the callers (train, export, library build) have their own tests."""

import json
import logging
import multiprocessing
import threading
from pathlib import Path

import pytest

from zooserve.repository import publish
from zooserve.repository.layout import version_folders
from zooserve.repository.publish import PublishError, next_version, publish_version

DEADLINE = 30.0


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every folder (None) and file (its bytes) under root, hidden ones included."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def _version(folder: Path, number: int, text: str = "old") -> None:
    (folder / str(number)).mkdir(parents=True)
    (folder / str(number) / "model.onnx").write_text(f"{text} {number}")


def _publish(folder: Path, text: str, overwrite: bool = False) -> publish.Staged:
    with publish_version(folder, overwrite=overwrite) as staged:
        (staged.folder / "model.onnx").write_text(text)
        (staged.folder / "card.json").write_text(json.dumps({"version": staged.version}))
    return staged


@pytest.fixture(params=["renameat2", "plain rename"])
def rename_kind(request, monkeypatch):
    """Run a test with Linux's renameat2 and with the fallback for systems without it."""
    if request.param == "plain rename":
        monkeypatch.setattr(publish, "_libc_renameat2", None)
    elif publish._libc_renameat2 is None:
        pytest.skip("this libc has no renameat2")
    return request.param


def test_numbering_follows_the_repository_rule(tmp_path):
    folder = tmp_path / "m"
    assert next_version(folder, overwrite=False) == 1  # no folder at all
    assert next_version(folder, overwrite=True) == 1
    folder.mkdir()
    assert next_version(folder, overwrite=False) == 1  # an empty one
    for name in ("1", "3", "007", "0", ".staging-x", "latest", "12345678901234567890"):
        (folder / name).mkdir()
    (folder / "9").write_text("a file, not a version folder")
    assert next_version(folder, overwrite=False) == 4  # the gap at 2 stays a gap
    assert next_version(folder, overwrite=True) == 3
    assert _publish(folder, "new").target == folder / "4"


def test_a_publish_stages_hidden_then_moves_in(tmp_path, rename_kind):
    folder = tmp_path / "models" / "m"
    _version(folder, 1)
    with publish_version(folder) as staged:
        assert staged.version == 2 and staged.target == folder / "2"
        assert staged.folder.parent == folder and staged.folder.name.startswith(".")
        (staged.folder / "model.onnx").write_text("new")
        (staged.folder / "plots").mkdir()
        (staged.folder / "plots" / "curve.png").write_bytes(b"png")
        # What a polling server sees meanwhile: version 1 only, no half-written version 2.
        assert list(version_folders(folder)) == [1]
    assert sorted(p.name for p in folder.iterdir()) == ["1", "2"]  # no staging folder left
    assert (folder / "2" / "model.onnx").read_text() == "new"
    assert (folder / "2" / "plots" / "curve.png").read_bytes() == b"png"
    assert (folder / "2").stat().st_mode & 0o777 == 0o755
    assert (folder / "1" / "model.onnx").read_text() == "old 1"


def test_without_overwrite_every_publish_is_a_new_version(tmp_path, rename_kind):
    folder = tmp_path / "m"
    _version(folder, 1)
    _version(folder, 2)
    before = _snapshot(folder)
    assert _publish(folder, "new").version == 3
    after = _snapshot(folder)
    assert {k: v for k, v in after.items() if not k.startswith("3")} == before
    assert after["3/model.onnx"] == b"new"


def test_overwrite_replaces_the_highest_version_and_nothing_else(tmp_path, rename_kind):
    folder = tmp_path / "m"
    _version(folder, 1)
    _version(folder, 2)
    (folder / "2" / "stale.png").write_bytes(b"from the replaced version")
    staged = _publish(folder, "replacement", overwrite=True)
    assert (staged.version, staged.target) == (2, folder / "2")
    assert sorted(p.name for p in folder.iterdir()) == ["1", "2"]  # the old 2 is gone
    assert sorted(p.name for p in (folder / "2").iterdir()) == ["card.json", "model.onnx"]
    assert (folder / "2" / "model.onnx").read_text() == "replacement"
    assert (folder / "1" / "model.onnx").read_text() == "old 1"


def test_overwrite_with_no_version_yet_publishes_version_1(tmp_path, rename_kind):
    staged = _publish(tmp_path / "m", "first", overwrite=True)
    assert staged.target == tmp_path / "m" / "1"
    assert (staged.target / "model.onnx").read_text() == "first"


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_a_failure_leaves_the_model_folder_as_it_was(tmp_path, overwrite, failure):
    folder = tmp_path / "m"
    _version(folder, 1)
    _version(folder, 2)
    before = _snapshot(folder)
    with pytest.raises(failure):
        with publish_version(folder, overwrite=overwrite) as staged:
            (staged.folder / "model.onnx").write_text("half")
            assert staged.folder.is_dir()
            raise failure("writer failed")
    assert _snapshot(folder) == before  # no staging folder, no new or replaced version


def test_a_failure_removes_the_folders_the_publish_created(tmp_path):
    folder = tmp_path / "new" / "models" / "m"
    with pytest.raises(RuntimeError):
        with publish_version(folder):
            raise RuntimeError("writer failed")
    assert list(tmp_path.iterdir()) == []
    # A model folder that was there before stays, empty or not.
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError):
        with publish_version(tmp_path / "kept"):
            raise RuntimeError("writer failed")
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []


def test_a_version_written_meanwhile_by_someone_else_is_never_replaced(tmp_path, rename_kind):
    """A writer that does not take the lock (a copy by hand) puts version 2 in place while a
    publish of version 2 is staged: the publish fails, the other version stays."""
    folder = tmp_path / "m"
    _version(folder, 1)
    with pytest.raises(PublishError, match=r"cannot move the new version into .*2"):
        with publish_version(folder) as staged:
            (staged.folder / "model.onnx").write_text("ours")
            _version(folder, 2, text="theirs")
    assert sorted(p.name for p in folder.iterdir()) == ["1", "2"]
    assert (folder / "2" / "model.onnx").read_text() == "theirs 2"


class _Waiting(logging.Handler):
    """Sets an event when a publisher says it waits for another."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "waiting for another publisher" in record.getMessage():
            self.seen.set()


@pytest.fixture
def waiting():
    handler = _Waiting()
    logger = logging.getLogger(publish.__name__)
    logger.addHandler(handler)
    yield handler.seen
    logger.removeHandler(handler)


def _in_thread(target, *args) -> tuple[threading.Thread, list]:
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(target(*args))
        except BaseException as error:  # noqa: BLE001 - handed to the test
            outcome.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_second_publisher_waits_and_takes_the_next_number(tmp_path, waiting):
    folder = tmp_path / "m"
    _version(folder, 1)
    with publish_version(folder) as first:
        (first.folder / "model.onnx").write_text("first")
        thread, outcome = _in_thread(_publish, folder, "second")
        assert waiting.wait(DEADLINE), "the second publisher never waited for the first"
        assert not outcome  # still waiting: it has not picked a number yet
    thread.join(DEADLINE)
    assert not thread.is_alive()
    second = outcome[0]
    assert (first.version, second.version) == (2, 3)
    assert (folder / "2" / "model.onnx").read_text() == "first"
    assert (folder / "3" / "model.onnx").read_text() == "second"


def test_a_publisher_waiting_on_a_folder_that_goes_away_starts_again(tmp_path, waiting):
    """The first publisher created the model folder, then failed and removed it while the
    second waited on its lock: the second publishes into a fresh folder."""
    folder = tmp_path / "m"
    with pytest.raises(RuntimeError):
        with publish_version(folder):
            thread, outcome = _in_thread(_publish, folder, "second")
            assert waiting.wait(DEADLINE), "the second publisher never waited for the first"
            raise RuntimeError("first writer failed")
    thread.join(DEADLINE)
    assert not thread.is_alive()
    assert outcome[0].target == folder / "1"
    assert (folder / "1" / "model.onnx").read_text() == "second"


def _publish_several(folder: str, worker: int, count: int) -> list[int]:
    return [_publish(Path(folder), f"worker {worker} #{n}").version for n in range(count)]


def test_racing_processes_never_share_a_number(tmp_path):
    """Four processes publish five versions each into one model folder, uncoordinated: twenty
    versions, numbered 1 to 20, each holding what its own card says."""
    folder = tmp_path / "m"
    context = multiprocessing.get_context("fork")
    with context.Pool(4) as pool:
        results = [pool.apply_async(_publish_several, (str(folder), w, 5)) for w in range(4)]
        numbers = [n for result in results for n in result.get(DEADLINE)]
    assert sorted(numbers) == list(range(1, 21))
    assert sorted(version_folders(folder)) == list(range(1, 21))
    assert sorted(p.name for p in folder.iterdir()) == sorted(str(n) for n in range(1, 21))
    written = {(folder / str(n) / "model.onnx").read_text() for n in range(1, 21)}
    assert len(written) == 20
    for number in range(1, 21):
        card = json.loads((folder / str(number) / "card.json").read_text())
        assert card["version"] == number

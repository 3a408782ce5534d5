"""The repository folder is a boundary and a card vouches for every file of its version
(issue 21, item 4; zooserve/serving/repository_files.py), against a real `zooserve serve` process
with --model-control explicit, asked by tritonclient.

One table of hostile or careless repository versions: links out of the repository (a
library's entries, a version folder, a model folder, a weights file), manifests and cards
naming paths outside, ONNX external data that no card records, recorded files missing. Each
is found at startup and asked for again by RepositoryModelLoad, and is either served or
refused with a reason in the repository index that names no outside path and no outside
file's hash, reading the same whether the outside path exists or not; after each, a good
request is still answered. Then external-data weights swapped after an unload: refused, and
served again once the right file is back.

tritonclient.grpc is imported here, so zooserve's generated protobuf modules are not (both
register `inference.*`): the server runs in its own process."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.helpers.paths import MODELS
from tests.helpers.penguin_rows import LABELS, one_of_each
from tests.helpers.server import run_server
from zooserve.repository.layout import file_hashes, read_card, sha256_of_file, write_card

onnx = pytest.importorskip("onnx")  # the train extra: builds the external-data model

TOKEN = "repository-boundary-test-token-9c1e"
BEARER = {"authorization": f"Bearer {TOKEN}"}
PASSWD = Path("/etc/passwd")


# -- building versions -------------------------------------------------------------------------


def copy_version(repo: Path, source: str, name: str) -> Path:
    target = repo / name / "1"
    shutil.copytree(MODELS / source / "1", target)
    return target


def resign(folder: Path, served: str, leave_out: tuple[str, ...] = ()) -> None:
    """Rewrite the card as whoever changed the folder would: the served file's sha256 and
    every file as it is now (following links), but those left out."""
    card = read_card(folder)
    sha = sha256_of_file(folder / served)
    if isinstance(card.get("onnx"), dict):
        card["onnx"]["sha256"] = sha
    if "sha256" in card:
        card["sha256"] = sha
    card["files"] = {k: v for k, v in file_hashes(folder).items() if k not in leave_out}
    write_card(folder, card)


def edit_manifest(folder: Path, change: Callable[[dict], None]) -> None:
    manifest = json.loads((folder / "library.json").read_text())
    change(manifest)
    (folder / "library.json").write_text(json.dumps(manifest, indent=2))


def external_model(folder: Path, scale: float, card: str = "full") -> None:
    """A tiny model y = x @ (scale * I) whose weights ONNX keeps in weights.bin beside it;
    `card`: "full" records every file, "model only" records model.onnx alone (in `files`),
    "old" only `onnx.sha256`, as cards did before they recorded every file."""
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True, exist_ok=True)
    weights = numpy_helper.from_array(np.eye(4, dtype=np.float32) * scale, "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])], [weights])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    sha = sha256_of_file(folder / "model.onnx")
    record: dict = {"name": folder.parent.name, "version": 1, "task": "regression",
                    "onnx": {"file": "model.onnx", "sha256": sha}}
    if card == "full":
        record["files"] = file_hashes(folder)
    elif card == "model only":
        record["files"] = {"model.onnx": sha}
    write_card(folder, record)


# -- the table ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, Path], None]  # (repository, a folder outside it)
    served: bool
    reason: str = ""  # what the refusal says, in part


def entries_out(listed: bool) -> Callable[[Path, Path], None]:
    def build(repo: Path, outside: Path) -> None:
        folder = copy_version(repo, "spectra_search", "entries_out_listed" if listed
                              else "entries_out_unlisted")
        secret = outside / "entries.jsonl"
        if not secret.exists():
            secret.write_text('{"id": "outside-secret", "precursor_mz": 1.0}\n' * 4000)
        (folder / "entries.jsonl").unlink()
        (folder / "entries.jsonl").symlink_to(secret)
        if not listed:
            edit_manifest(folder, lambda m: m["files"].pop("entries.jsonl"))
        resign(folder, "library.json", leave_out=() if listed else ("entries.jsonl",))
    return build


def manifest_naming(path: str, name: str) -> Callable[[Path, Path], None]:
    def build(repo: Path, outside: Path) -> None:
        folder = copy_version(repo, "spectra_search", name)
        edit_manifest(folder, lambda m: m["files"].__setitem__(path, "0" * 64))
        resign(folder, "library.json")
    return build


def card_naming_system_file(repo: Path, outside: Path) -> None:
    folder = copy_version(repo, "penguins", "card_system_file")
    card = read_card(folder)
    card["files"]["../../../etc/passwd"] = sha256_of_file(PASSWD)
    write_card(folder, card)


def version_link(target: str, name: str) -> Callable[[Path, Path], None]:
    def build(repo: Path, outside: Path) -> None:
        if target == "penguins" and not (outside / "penguins").exists():
            shutil.copytree(MODELS / "penguins" / "1", outside / "penguins")
        (repo / name).mkdir()
        (repo / name / "1").symlink_to(outside / target)
    return build


def model_link_out(repo: Path, outside: Path) -> None:
    shutil.copytree(MODELS / "penguins" / "1", outside / "a_model" / "1")
    (repo / "model_link_out").symlink_to(outside / "a_model")


def version_link_inside(repo: Path, outside: Path) -> None:
    (repo / "version_link_inside").mkdir()
    (repo / "version_link_inside" / "1").symlink_to(Path("..") / "penguins" / "1")


def file_link_inside(repo: Path, outside: Path) -> None:
    folder = repo / "file_link_inside" / "1"
    folder.mkdir(parents=True)
    for name in ("model.onnx", "card.json", "training_curves.png", "confusion_matrix.png"):
        (folder / name).symlink_to(Path("..") / ".." / "penguins" / "1" / name)


def weights(how: str) -> Callable[[Path, Path], None]:
    def build(repo: Path, outside: Path) -> None:
        folder = repo / f"weights_{how.replace(' ', '_')}" / "1"
        card = {"unlisted": "model only", "old card": "old"}.get(how, "full")
        external_model(folder, 1.0, card)
        scratch = repo.parent / "scratch" / folder.parent.name  # neither inside nor outside
        if how == "link out":
            external_model(scratch, 5.0)
            shutil.copy(scratch / "weights.bin", outside / "weights.bin")
            (folder / "weights.bin").unlink()
            (folder / "weights.bin").symlink_to(outside / "weights.bin")
            resign(folder, "model.onnx")  # the card now records the outside file's sha256
        elif how == "missing":
            (folder / "weights.bin").unlink()
        elif how == "swapped":
            external_model(scratch, 2.0)
            shutil.copy(scratch / "weights.bin", folder / "weights.bin")
    return build


def plot_missing(repo: Path, outside: Path) -> None:
    folder = copy_version(repo, "penguins", "plot_missing")
    (folder / "training_curves.png").unlink()


LEADS_OUT = "leads outside the repository folder"
CASES = [
    Case("entries_out_unlisted", entries_out(listed=False), False,
         "entries.jsonl is not listed in library.json's files"),
    Case("entries_out_listed", entries_out(listed=True), False, f"'entries.jsonl' {LEADS_OUT}"),
    Case("manifest_system_file", manifest_naming("../../../etc/passwd", "manifest_system_file"),
         False,
         "library.json lists a file outside its version folder"),
    Case("manifest_no_file", manifest_naming("../../../nope", "manifest_no_file"), False,
         "library.json lists a file outside its version folder"),
    Case("card_system_file", card_naming_system_file, False,
         "card.json's 'files' names a file outside its version folder"),
    Case("version_link_out", version_link("penguins", "version_link_out"), False,
         f"its folder {LEADS_OUT}"),
    Case("version_link_dangling", version_link("nothing_here", "version_link_dangling"), False,
         f"its folder {LEADS_OUT}"),
    Case("model_link_out", model_link_out, False, f"its folder {LEADS_OUT}"),
    Case("version_link_inside", version_link_inside, True),
    Case("file_link_inside", file_link_inside, True),
    Case("weights_link_out", weights("link out"), False, f"'weights.bin' {LEADS_OUT}"),
    Case("weights_missing", weights("missing"), False, "'weights.bin' is missing"),
    Case("weights_unlisted", weights("unlisted"), False,
         "keeps tensor data in 'weights.bin', which its card does not record"),
    Case("weights_old_card", weights("old card"), False,
         "keeps tensor data in 'weights.bin', which its card does not record"),
    Case("weights_swapped", weights("swapped"), False, "weights.bin has sha256"),
    Case("weights_full", weights("full"), True),
    Case("plot_missing", plot_missing, True),  # recorded, absent, never opened: logged
]


# -- the server --------------------------------------------------------------------------------


@dataclass
class World:
    repo: Path
    outside: Path
    client: grpcclient.InferenceServerClient
    log: Callable[[], str]
    startup: dict

    def index(self) -> dict:
        return {(m.name, m.version): (m.state, m.reason) for m in
                self.client.get_model_repository_index(headers=BEARER).models}

    def forbidden(self) -> list[str]:
        """What no reason may hold: outside paths, and any part of an outside file's hash."""
        texts = [str(self.outside), os.path.realpath(self.outside), self.outside.name,
                 "/etc/", "passwd", "nope", "nothing_here", "../"]
        files = [PASSWD] + [p for p in self.outside.rglob("*") if p.is_file()]
        texts += [sha256_of_file(p)[:12] for p in files]
        return texts


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    base = tmp_path_factory.mktemp("boundary")
    repo, outside = base / "models", base / "elsewhere_9f3"
    outside.mkdir()
    for name in ("penguins", "spectra_embedding"):
        copy_version(repo, name, name)
    for case in CASES:
        case.build(repo, outside)
    env = {"ZOOSERVE_AUTH_TOKEN": TOKEN}
    with run_server(repo, base, "--model-control", "explicit", env=env) as running:
        client = grpcclient.InferenceServerClient(running.url)
        world = World(repo, outside, client, running.log, {})
        world.startup = world.index()
        yield world
        client.close()


def predict_penguins(client: grpcclient.InferenceServerClient) -> None:
    features, species = one_of_each()
    tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features.astype(np.float32))
    result = client.infer("penguins", [tensor], headers=BEARER, client_timeout=30)
    assert [LABELS[i] for i in result.as_numpy("probabilities").argmax(axis=1)] == species


def load(world: World, name: str) -> str:
    """RepositoryModelLoad; "" when it loaded, else the error's message."""
    try:
        world.client.load_model(name, headers=BEARER, client_timeout=60)
    except InferenceServerException as exc:
        assert exc.status() == "StatusCode.INVALID_ARGUMENT", exc
        return exc.message()
    return ""


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_hostile_repository_version(world: World, case: Case):
    key = (case.name, "1")
    state, reason = world.startup[key]
    message = load(world, case.name)  # asked for again: the same answer
    again = world.index()[key]
    if case.served:
        assert (state, message, again[0]) == ("READY", "", "READY"), (reason, message)
    else:
        assert state == again[0] == "UNAVAILABLE"
        assert case.reason in reason, reason
        assert reason == again[1] and reason in message
        for text in world.forbidden():
            assert text not in reason and text not in message, (text, reason)
    predict_penguins(world.client)
    assert world.client.is_server_live(headers=BEARER)


def test_an_outside_path_reads_the_same_whether_it_exists_or_not(world: World):
    def reason(name: str) -> str:
        return world.startup[(name, "1")][1].replace(name, "NAME")

    assert reason("manifest_system_file") == reason("manifest_no_file")
    assert reason("version_link_out") == reason("version_link_dangling") \
        == reason("model_link_out")


def test_what_a_link_out_pointed_at_is_never_served(world: World):
    """The probe's finding: a library whose entries lead outside answered `metadata` with
    the outside file's lines. Refused, it answers nothing at all."""
    for name in ("entries_out_unlisted", "entries_out_listed"):
        assert not world.client.is_model_ready(name, headers=BEARER)
    assert "outside-secret" not in str(world.index())


def test_the_served_links_and_external_data_answer(world: World):
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    tensor = grpcclient.InferInput("x", [2, 4], "FP32")
    tensor.set_data_from_numpy(x)
    result = world.client.infer("weights_full", [tensor], headers=BEARER)
    np.testing.assert_allclose(result.as_numpy("y"), x)
    assert "'training_curves.png', not in its folder and not needed to serve it" in world.log()


def test_weights_swapped_after_an_unload_are_refused_until_put_back(world: World):
    """The probe's finding: external data replaced between an unload and a load served the
    new weights. The card records weights.bin: refused with the reason, and served again
    (with the right answers) once the exported file is back."""
    folder = world.repo / "swap" / "1"
    external_model(folder, 1.0)
    exported = (folder / "weights.bin").read_bytes()
    assert load(world, "swap") == ""
    x = np.ones((1, 4), dtype=np.float32)

    def answer() -> np.ndarray:
        tensor = grpcclient.InferInput("x", [1, 4], "FP32")
        tensor.set_data_from_numpy(x)
        return world.client.infer("swap", [tensor], headers=BEARER).as_numpy("y")

    np.testing.assert_allclose(answer(), x)
    world.client.unload_model("swap", headers=BEARER)
    other = world.repo.parent / "scratch" / "swap"
    external_model(other, 3.0)
    shutil.copy(other / "weights.bin", folder / "weights.bin")
    message = load(world, "swap")
    assert "weights.bin has sha256" in message and "its card records" in message
    assert world.index()[("swap", "1")][0] == "UNAVAILABLE"
    assert hashlib.sha256(exported).hexdigest()[:16] in message  # inside: said, to compare
    predict_penguins(world.client)

    (folder / "weights.bin").write_bytes(exported)
    assert load(world, "swap") == ""
    assert world.index()[("swap", "1")] == ("READY", "")
    np.testing.assert_allclose(answer(), x)


def test_external_data_is_found_wherever_onnx_keeps_a_tensor(tmp_path):
    """The reader the check relies on (zooserve/serving/onnx_files.py, no `onnx` package) finds
    external data in initializers, node attributes and subgraphs alike, and refuses a file
    it cannot follow rather than let ONNX Runtime open what it did not check."""
    from onnx import TensorProto, helper, numpy_helper

    from zooserve.serving.onnx_files import NotOnnx, external_data_locations

    def tensor(name: str) -> onnx.TensorProto:
        return numpy_helper.from_array(np.full(4, 1.0, dtype=np.float32), name)

    value = helper.make_tensor_value_info
    branch = helper.make_graph(
        [helper.make_node("Add", ["x", "in_branch"], ["z"])], "branch", [],
        [value("z", TensorProto.FLOAT, [4])], [tensor("in_branch")])
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=tensor("in_attribute")),
         helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=branch)],
        "g", [value("x", TensorProto.FLOAT, [4]), value("flag", TensorProto.BOOL, [])],
        [value("y", TensorProto.FLOAT, [4])], [tensor("in_graph")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, str(tmp_path / "model.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=False, size_threshold=0, convert_attribute=True)
    assert sorted(external_data_locations(tmp_path / "model.onnx")) == \
        ["in_attribute", "in_branch", "in_graph"]
    (tmp_path / "broken.onnx").write_bytes(b"\x3a\xff\xff\xff\xff\x0f")  # a length past the end
    with pytest.raises(NotOnnx):
        external_data_locations(tmp_path / "broken.onnx")

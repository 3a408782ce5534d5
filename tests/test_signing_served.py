"""`zooserve serve --verify-key`: real server processes on loopback over repositories holding
signed, unsigned, tampered and foreign-signed versions. The signed ones answer; every other
version is UNAVAILABLE in the repository index with its reason while the rest serve; and
that holds at start, on poll and on an explicit load. A key that cannot be used stops the
server at start with one line. Index rows are read over HTTP (POST /v2/repository/index)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.helpers.cli import zooserve
from tests.helpers.paths import MODELS
from tests.helpers.penguin_rows import LABELS, one_of_each
from tests.helpers.server import free_port, run_server
from tests.helpers.signing_keys import KeyPair, make_key_pair
from tests.helpers.tampering import swap_model_and_card
from zooserve.repository.layout import MODEL_FILE
from zooserve.repository.signing import sign_version

WAIT_S = 60  # the longest a change may take to show; the tests wait for it, not for time
TOKEN = "signing-test-token-0b7c44e1d2"
UNSIGNED = "SignatureRefused: unsigned: its folder has no model.sig"


def index(http_url: str) -> dict[tuple[str, str], tuple[str, str]]:
    rows = httpx.post(f"{http_url}/v2/repository/index", json={}, timeout=30,
                      headers={"authorization": f"Bearer {TOKEN}"})
    assert rows.status_code == 200, rows.text
    return {(r["name"], r["version"]): (r["state"], r["reason"]) for r in rows.json()}


def wait_for(condition: Callable[[], object], what: str) -> object:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"still waiting after {WAIT_S} s for: {what}")


def species(http_url: str, model: str, version: str = "") -> list[str]:
    """One penguins request over HTTP; the species it names (checked right)."""
    features, expected = one_of_each()
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {"inputs": [{"name": "features", "shape": list(features.shape), "datatype": "FP32",
                        "data": features.flatten().tolist()}]}
    answer = httpx.post(http_url + path, json=body, timeout=30,
                        headers={"authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 200, answer.text
    output = next(o for o in answer.json()["outputs"] if o["name"] == "probabilities")
    rows = [output["data"][i:i + 3] for i in range(0, len(output["data"]), 3)]
    named = [LABELS[row.index(max(row))] for row in rows]
    assert named == expected
    return named


def copy_version(repo: Path, name: str, version: int = 1, source: str = "penguins",
                 key: KeyPair | None = None) -> Path:
    """Copy a zoo version into place as a publisher does: into a hidden folder (signed
    there, with `key`), then one rename."""
    staging = repo / name / f".staging-{version}"
    shutil.copytree(MODELS / source / "1", staging)
    if key is not None:
        sign_version(staging, key.private)
    target = repo / name / str(version)
    staging.rename(target)
    return target


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, KeyPair]:
    folder = tmp_path_factory.mktemp("keys")
    return {"ours": make_key_pair(folder, "ours"), "theirs": make_key_pair(folder, "theirs")}


def test_only_versions_signed_by_a_given_key_serve(tmp_path, keys):
    repo = tmp_path / "models"
    copy_version(repo, "signed", key=keys["ours"])
    copy_version(repo, "unsigned", source="weather")
    copy_version(repo, "foreign", key=keys["theirs"])
    tampered = copy_version(repo, "tampered", key=keys["ours"])
    swap_model_and_card(tampered, MODELS / "digits" / "1" / MODEL_FILE)
    added = copy_version(repo, "added", key=keys["ours"])
    (added / "notes.txt").write_text("slipped in after signing")

    with run_server(repo, tmp_path, "--verify-key", str(keys["ours"].public)) as server:
        assert index(server.http_url) == {
            ("added", "1"): ("UNAVAILABLE", "SignatureRefused: files changed since signing: "
                                            "'notes.txt' added"),
            ("foreign", "1"): ("UNAVAILABLE", "SignatureRefused: signed by none of the given "
                                              "keys ('ours.pem'): its model.sig was made with "
                                              "another key, or altered after signing"),
            ("signed", "1"): ("READY", ""),
            ("tampered", "1"): ("UNAVAILABLE", "SignatureRefused: files changed since "
                                               "signing: 'card.json' changed, 'model.onnx' "
                                               "changed"),
            ("unsigned", "1"): ("UNAVAILABLE", UNSIGNED),
        }
        species(server.http_url, "signed")
        refused = httpx.post(f"{server.http_url}/v2/models/tampered/infer", timeout=30,
                             json={"inputs": []})
        assert refused.status_code == 404, refused.text
        assert "failed to load and is unavailable" in refused.json()["error"]
        assert httpx.get(f"{server.http_url}/v2/health/ready", timeout=10).status_code == 200
        species(server.http_url, "signed")  # still serving after the refusals
        assert "serving only versions signed by one of 1 keys" in server.log()


def test_poll_serves_a_version_once_it_is_signed_and_never_an_unsigned_one(tmp_path, keys):
    repo = tmp_path / "models"
    copy_version(repo, "penguins", key=keys["ours"])
    key_folder = keys["ours"].public.parent  # ours.pem and theirs.pem: either verifies
    with run_server(repo, tmp_path, "--verify-key", str(key_folder),
                    "--model-control", "poll", "--poll-interval", "0.2") as server:
        assert index(server.http_url) == {("penguins", "1"): ("READY", "")}
        copy_version(repo, "penguins", 2)  # unsigned
        copy_version(repo, "penguins", 3, key=keys["theirs"])
        wait_for(lambda: index(server.http_url).get(("penguins", "3")) == ("READY", "")
                 and ("penguins", "2") in index(server.http_url), "versions 2 and 3 seen")
        assert index(server.http_url)[("penguins", "2")] == ("UNAVAILABLE", UNSIGNED)
        species(server.http_url, "penguins", "3")
        species(server.http_url, "penguins", "1")

        # Signed in place: the new model.sig is a change the next look picks up.
        sign_version(repo / "penguins" / "2", keys["ours"].private)
        wait_for(lambda: index(server.http_url)[("penguins", "2")] == ("READY", ""),
                 "version 2 served once signed")
        species(server.http_url, "penguins", "2")


def test_an_explicit_load_verifies_too(tmp_path, keys):
    repo = tmp_path / "models"
    copy_version(repo, "penguins", key=keys["ours"])
    with run_server(repo, tmp_path, "--verify-key", str(keys["ours"].public),
                    "--model-control", "explicit",
                    env={"ZOOSERVE_AUTH_TOKEN": TOKEN}) as server:
        late = copy_version(repo, "late")
        load = f"{server.http_url}/v2/repository/models/late/load"
        bearer = {"authorization": f"Bearer {TOKEN}"}
        refused = httpx.post(load, headers=bearer, timeout=60)
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"] == (f"model 'late': version 1 failed to load: {UNSIGNED}; "
                                           "no version of it serves")
        assert index(server.http_url)[("late", "1")] == ("UNAVAILABLE", UNSIGNED)

        sign_version(late, keys["ours"].private)
        assert httpx.post(load, headers=bearer, timeout=60).status_code == 200
        assert index(server.http_url)[("late", "1")] == ("READY", "")
        species(server.http_url, "late")
        species(server.http_url, "penguins")


@pytest.mark.parametrize("how", ["flag", "variable", "workers"])
def test_a_key_that_cannot_be_used_stops_the_server_at_start(tmp_path, keys, how):
    repo = tmp_path / "models"
    copy_version(repo, "penguins", key=keys["ours"])
    missing = tmp_path / "gone.pem"
    given = f"{keys['ours'].public}:{missing}"
    ports = ["--grpc-port", str(free_port()), "--http-port", str(free_port()),
             "--metrics-port", str(free_port())]
    if how == "flag":
        run = zooserve("serve", "--models", str(repo), *ports,
                       "--verify-key", str(keys["ours"].public), "--verify-key", str(missing))
    elif how == "variable":
        run = zooserve("serve", "--models", str(repo), *ports,
                       env={"ZOOSERVE_VERIFY_KEY": given})
    else:  # the parent of several workers checks them before any worker starts
        run = zooserve("serve", "--models", str(repo), *ports, "--workers", "2",
                       env={"ZOOSERVE_VERIFY_KEY": given})
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines()[-1] == (
        "zooserve serve: error: --verify-key / ZOOSERVE_VERIFY_KEY: verification key "
        f"'{missing}' does not exist")
    assert "loaded penguins" not in run.stderr

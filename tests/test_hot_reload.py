"""Changing models while serving (zooserve/serving/model_control.py), on real `zooserve serve`
processes asked by tritonclient and httpx: the poll mode under load (new, changed and removed
versions, no failed request, the old version released once its calls are answered), broken
new versions that leave the old one serving, files still being written, explicit load and
unload (gRPC and HTTP, with the bearer token they require), SIGHUP in every mode and through
the --workers parent, the sha256 check against the card, and `model_repository` in
ServerMetadata only when enabled.

tritonclient.grpc is imported here, so zooserve's generated protobuf modules are not (both
register `inference.*` in the default descriptor pool): the servers run in their own
processes."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from tests.helpers.paths import MODELS, ROOT
from tests.helpers.penguin_rows import LABELS, one_of_each
from tests.helpers.server import free_port, hold_lone_requests, run_server

TOKEN = "hot-reload-test-token-5d8e1f3a"
BEARER = {"authorization": f"Bearer {TOKEN}"}
WAIT_S = 60  # the longest any change may take to show; the tests wait for behaviour, not time


def wait_for(condition: Callable[[], object], what: str, timeout: float = WAIT_S) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"still waiting after {timeout:.0f} s for: {what}")


def penguin_inputs() -> list[grpcclient.InferInput]:
    features, _ = one_of_each()
    tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features.astype(np.float32))
    return [tensor]


def predict(client: grpcclient.InferenceServerClient, version: str = "",
            headers: dict | None = None) -> str:
    """One penguins request; the version that answered it (checking the answer is right)."""
    result = client.infer("penguins", penguin_inputs(), model_version=version, headers=headers,
                          client_timeout=30)
    probabilities = result.as_numpy("probabilities")
    assert [LABELS[i] for i in probabilities.argmax(axis=1)] == one_of_each()[1]
    return result.get_response().model_version


class Load:
    """Client threads, each on its own connection, sending penguins requests that name no
    version as fast as they are answered; counting answers per version and failures."""

    def __init__(self, url: str, threads: int = 4) -> None:
        self.url = url
        self.versions: Counter[str] = Counter()
        self.last_version = ""
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        client = grpcclient.InferenceServerClient(self.url)
        inputs = penguin_inputs()
        try:
            while not self._stop.is_set():
                try:
                    result = client.infer("penguins", inputs, client_timeout=30)
                    version = result.get_response().model_version
                    with self._lock:
                        self.versions[version] += 1
                        self.last_version = version
                except InferenceServerException as exc:
                    with self._lock:
                        self.failures.append(f"{exc.status()}: {exc.message()}")
        finally:
            client.close()

    @property
    def sent(self) -> int:
        return sum(self.versions.values()) + len(self.failures)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)


def copy_version(repo: Path, version: int, name: str = "penguins",
                 source: Path = MODELS / "penguins" / "1") -> Path:
    """Copy a version into place the safe way: into a hidden folder, then one rename."""
    staging = repo / name / f".staging-{version}"
    shutil.copytree(source, staging)
    target = repo / name / str(version)
    staging.rename(target)
    return target


def index(client: grpcclient.InferenceServerClient, headers: dict | None = None) -> dict:
    """(name, version) -> (state, reason) from RepositoryIndex."""
    return {(m.name, m.version): (m.state, m.reason)
            for m in client.get_model_repository_index(headers=headers).models}


def health(url: str, service: str) -> int:
    with grpc.insecure_channel(url) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5).status


def log_after(log: str, first: str, then: str) -> bool:
    """Whether `then` appears in the log after the first `first`."""
    at = log.find(first)
    return at >= 0 and then in log[at:]


def test_poll_swaps_versions_under_load_without_a_failed_request(copy_model, tmp_path):
    repo = copy_model("penguins")
    # Each request waits up to 20 ms for others to batch with: so requests are in flight
    # (holding the old version) at the moment a swap happens.
    batching = {"max_queue_delay_us": 20_000, "preferred_batch_sizes": [64]}
    (repo / "penguins" / "serving.json").write_text(json.dumps({"dynamic_batching": batching}))
    with run_server(repo, tmp_path, "--model-control", "poll", "--poll-interval", "0.3") as running:
        client = grpcclient.InferenceServerClient(running.url)
        with Load(running.url) as load:
            wait_for(lambda: load.versions["1"] >= 50, "answers from version 1")

            # A new version: clients that name none move to it.
            copy_version(repo, 2)
            wait_for(lambda: load.last_version == "2", "answers from version 2")
            moved_at = load.sent

            # serving.json changed: every version reloads with it, under load, and each old
            # copy is released once the calls it had taken are answered.
            (repo / "penguins" / "serving.json").write_text(
                json.dumps({"dynamic_batching": batching, "max_queue_size": 200}))
            wait_for(lambda: client.get_model_config("penguins").config.dynamic_batching
                     .default_queue_policy.max_queue_size == 200, "the reloaded configuration")
            wait_for(lambda: "released penguins version 2" in running.log(),
                     "the replaced version 2 released")

            # Version 1 removed: taken out of service, released, version 2 goes on.
            shutil.rmtree(repo / "penguins" / "1")
            wait_for(lambda: not client.is_model_ready("penguins", "1"), "version 1 gone")
            wait_for(lambda: log_after(running.log(), "penguins version 1 is gone",
                                       "released penguins version 1"),
                     "version 1 released after its calls finished")
            settled = load.sent
            wait_for(lambda: load.sent >= settled + 50, "more answers after the removal")
        print(f"\nhot swap under load (4 client threads, poll every 0.3 s): {load.sent} "
              f"requests sent, {len(load.failures)} failed; answered by version: "
              f"{dict(load.versions)}; version 2 answering after {moved_at} requests")
        for line in running.log().splitlines():
            if "released penguins" in line:
                print(line.split(": ", 1)[1])
        assert load.failures == []
        assert load.versions["1"] > 0 and load.versions["2"] > 0
        assert predict(client) == "2"
        assert index(client) == {("penguins", "2"): ("READY", "")}
        assert client.is_server_ready()
        log = running.log()
        assert "reloaded penguins version 2" in log
        assert "could not" not in log


def test_a_version_still_being_written_is_not_loaded_half_written(copy_model, tmp_path):
    """model.onnx written slowly, in pieces, into its version folder (no rename): each look
    sees it changed since the last, so it is loaded once whole, never half."""
    repo = copy_model("penguins")
    whole = (MODELS / "penguins" / "1" / "model.onnx").read_bytes()
    with run_server(repo, tmp_path, "--model-control", "poll", "--poll-interval", "0.2") as running:
        client = grpcclient.InferenceServerClient(running.url)
        folder = repo / "penguins" / "2"
        folder.mkdir()
        shutil.copy(MODELS / "penguins" / "1" / "card.json", folder)
        pieces = 12
        step = len(whole) // pieces + 1
        with open(folder / "model.onnx", "wb") as model_file:
            for start in range(0, len(whole), step):
                model_file.write(whole[start:start + step])
                model_file.flush()
                time.sleep(0.1)  # a copy in progress: the file grows between two looks
        wait_for(lambda: client.is_model_ready("penguins", "2"), "version 2 loaded")
        assert predict(client) == "2"
        assert "could not load penguins version 2" not in running.log()


def test_a_broken_new_version_leaves_the_old_one_serving(copy_model, tmp_path):
    repo = copy_model("penguins")
    with run_server(repo, tmp_path, "--model-control", "poll", "--poll-interval", "0.3") as running:
        client = grpcclient.InferenceServerClient(running.url)
        # Version 2 is not ONNX (and its card records no sha256); version 3 is ONNX but not
        # the file its card names.
        staging = repo / "penguins" / ".new"
        staging.mkdir()
        (staging / "model.onnx").write_bytes(b"this is not an onnx model")
        staging.rename(repo / "penguins" / "2")
        three = copy_version(repo, 3)
        card = json.loads((three / "card.json").read_text())
        card["onnx"]["sha256"] = "0" * 64
        (three / "card.json").write_text(json.dumps(card))
        rows = wait_for(lambda: (lambda r: r if ("penguins", "3") in r and r[("penguins", "3")]
                                 [0] == "UNAVAILABLE" and ("penguins", "2") in r else None)(
                                     index(client)), "versions 2 and 3 reported")
        assert rows[("penguins", "1")] == ("READY", "")
        assert rows[("penguins", "2")][0] == "UNAVAILABLE"
        assert "protobuf" in rows[("penguins", "2")][1].lower()  # ONNX Runtime: not ONNX
        assert "sha256" in rows[("penguins", "3")][1] and "card" in rows[("penguins", "3")][1]
        assert predict(client) == "1"  # the highest version that loaded
        assert client.is_model_ready("penguins")
        assert not client.is_model_ready("penguins", "2")
        assert health(running.url, "penguins") == health_pb2.HealthCheckResponse.SERVING

        # Version 1's file replaced by garbage: the copy loaded earlier keeps serving, and
        # the index says why it is not the new one.
        replacement = repo / "penguins" / "1" / ".model.onnx.new"
        replacement.write_bytes(b"garbage in place of a model")
        replacement.rename(repo / "penguins" / "1" / "model.onnx")
        reason = wait_for(lambda: index(client)[("penguins", "1")][1], "version 1's reason")
        assert index(client)[("penguins", "1")][0] == "READY"
        assert "earlier" in reason and "sha256" in reason
        assert predict(client, "1") == "1"

        # Version 3's card corrected: it loads, and clients that name no version move to it.
        card["onnx"]["sha256"] = json.loads(
            (MODELS / "penguins" / "1" / "card.json").read_text())["onnx"]["sha256"]
        fixed = three / ".card.json.new"
        fixed.write_text(json.dumps(card))
        fixed.rename(three / "card.json")
        wait_for(lambda: client.is_model_ready("penguins", "3"), "version 3 fixed")
        assert predict(client) == "3"
        log = running.log()
        assert "could not load penguins version 2" in log
        assert "could not reload penguins version 1" in log


def test_the_card_sha256_is_checked_at_startup(copy_model, tmp_path):
    repo = copy_model("penguins")
    copy_model("penguins", as_version=2, repo=repo)
    copy_model("penguins", as_name="no_checksum", repo=repo)
    card_path = repo / "penguins" / "2" / "card.json"
    card = json.loads(card_path.read_text())
    card["onnx"]["sha256"] = "f" * 64
    card_path.write_text(json.dumps(card))
    bare = repo / "no_checksum" / "1" / "card.json"
    card = json.loads(bare.read_text())
    del card["onnx"]["sha256"], card["files"]  # a card that records no sha256 at all
    bare.write_text(json.dumps(card))
    with run_server(repo, tmp_path) as running:
        client = grpcclient.InferenceServerClient(running.url)
        rows = index(client)
        assert rows[("penguins", "2")][0] == "UNAVAILABLE"
        assert "sha256" in rows[("penguins", "2")][1]
        assert rows[("penguins", "1")] == ("READY", "")
        assert rows[("no_checksum", "1")] == ("READY", "")  # loaded, with a warning
        assert predict(client) == "1"
        log = running.log()
        assert log.count("its card has no sha256") == 1
        assert "could not load penguins version 2" in log


def test_explicit_load_and_unload(copy_model, tmp_path):
    repo = copy_model("penguins")
    copy_model("penguins", as_name="slow", repo=repo)
    # A lone request to `slow` waits up to 4 s for company: in flight while it is unloaded.
    hold_lone_requests(repo / "slow", delay_us=4_000_000)
    env = {"ZOOSERVE_AUTH_TOKEN": TOKEN}
    with run_server(repo, tmp_path, "--model-control", "explicit", env=env) as running:
        client = grpcclient.InferenceServerClient(running.url)
        assert "model_repository" in client.get_server_metadata(headers=BEARER).extensions

        # Unload while a request is in flight: it is answered by the version it holds, which
        # reads UNLOADING until then and is released after.
        features, _ = one_of_each()
        tensor = grpcclient.InferInput("features", list(features.shape), "FP32")
        tensor.set_data_from_numpy(features)
        answers: list = []
        in_flight = threading.Thread(target=lambda: answers.append(client.infer(
            "slow", [tensor], headers=BEARER, client_timeout=30)))
        in_flight.start()
        running.wait_for_in_flight("slow")  # in the server's queue
        client.unload_model("slow", headers=BEARER)
        assert index(client, BEARER)[("slow", "1")][0] == "UNLOADING"
        assert not client.is_model_ready("slow", headers=BEARER)
        in_flight.join(timeout=30)
        assert len(answers) == 1 and answers[0].as_numpy("probabilities").shape == (3, 3)
        wait_for(lambda: "released slow version 1" in running.log(), "slow released")
        assert index(client, BEARER)[("slow", "1")] == ("UNAVAILABLE", "unloaded")

        # Unloaded: not ready, NOT_SERVING to health, NOT_FOUND to inference.
        client.unload_model("penguins", headers=BEARER)
        assert not client.is_model_ready("penguins", headers=BEARER)
        assert health(running.url, "penguins") == health_pb2.HealthCheckResponse.NOT_SERVING
        with pytest.raises(InferenceServerException) as refused:
            predict(client, headers=BEARER)
        assert refused.value.status() == "StatusCode.NOT_FOUND"
        assert "unloaded" in refused.value.message()

        # A version added on disk waits for a load (nothing polls), then comes with it.
        copy_version(repo, 2)
        assert ("penguins", "2") not in index(client, BEARER)
        client.load_model("penguins", headers=BEARER)
        assert client.is_model_ready("penguins", headers=BEARER)
        assert health(running.url, "penguins") == health_pb2.HealthCheckResponse.SERVING
        assert predict(client, headers=BEARER) == "2"
        assert predict(client, "1", headers=BEARER) == "1"

        # A load that finds a broken version says so; what loaded serves.
        (repo / "penguins" / "3").mkdir()
        (repo / "penguins" / "3" / "model.onnx").write_bytes(b"not a model")
        with pytest.raises(InferenceServerException) as failed:
            client.load_model("penguins", headers=BEARER)
        assert failed.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert "version 3 failed to load" in failed.value.message()
        assert predict(client, headers=BEARER) == "2"

        # Names that are not a model folder.
        for name, status in (("no_such_model", "NOT_FOUND"), ("../models", "INVALID_ARGUMENT"),
                             (".staging", "INVALID_ARGUMENT")):
            with pytest.raises(InferenceServerException) as bad:
                client.load_model(name, headers=BEARER)
            assert bad.value.status() == f"StatusCode.{status}", name

        # Without the token, load and unload are refused and change nothing.
        with pytest.raises(InferenceServerException):
            client.unload_model("penguins")
        assert client.is_model_ready("penguins", headers=BEARER)

        # The same over HTTP (Triton's REST repository extension).
        with httpx.Client(base_url=running.http_url, headers=BEARER, timeout=30) as http:
            answer = http.post("/v2/repository/models/penguins/unload")
            assert answer.status_code == 200, answer.text
            assert http.get("/v2/models/penguins/ready").status_code != 200
            answer = http.post("/v2/repository/models/penguins/load")
            assert answer.status_code == 400 and "version 3" in answer.json()["error"]
            shutil.rmtree(repo / "penguins" / "3")
            assert http.post("/v2/repository/models/penguins/load").status_code == 200
            assert http.get("/v2/models/penguins/ready").status_code == 200
            assert http.post("/v2/repository/models/nothing/load").status_code == 404

        # SIGHUP re-reads every model but the unloaded ones.
        copy_version(repo, 4)
        running.process.send_signal(signal.SIGHUP)
        wait_for(lambda: client.is_model_ready("penguins", "4", headers=BEARER),
                 "version 4 after SIGHUP")
        assert not client.is_model_ready("slow", headers=BEARER)
        assert running.process.poll() is None


def test_without_model_control_load_and_unload_are_refused_and_sighup_is_ignored(
        copy_model, tmp_path):
    repo = copy_model("penguins")
    env = {"ZOOSERVE_AUTH_TOKEN": TOKEN}
    with run_server(repo, tmp_path, env=env) as running:
        client = grpcclient.InferenceServerClient(running.url)
        assert "model_repository" not in client.get_server_metadata(headers=BEARER).extensions
        for call in (client.load_model, client.unload_model):
            with pytest.raises(InferenceServerException) as refused:
                call("penguins", headers=BEARER)
            assert refused.value.status() == "StatusCode.UNAVAILABLE"
            assert "--model-control explicit" in refused.value.message()
        copy_version(repo, 2)
        running.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "SIGHUP ignored" in running.log(), "the SIGHUP line")
        assert running.process.poll() is None
        assert predict(client, headers=BEARER) == "1"
        assert ("penguins", "2") not in index(client, BEARER)


def test_poll_mode_refuses_explicit_requests_and_rescans_on_sighup(copy_model, tmp_path):
    repo = copy_model("penguins")
    env = {"ZOOSERVE_AUTH_TOKEN": TOKEN}
    with run_server(repo, tmp_path, "--model-control", "poll", "--poll-interval", "3600",
                    env=env) as running:
        client = grpcclient.InferenceServerClient(running.url)
        assert "model_repository" in client.get_server_metadata(headers=BEARER).extensions
        with pytest.raises(InferenceServerException) as refused:
            client.unload_model("penguins", headers=BEARER)
        assert refused.value.status() == "StatusCode.UNAVAILABLE"
        assert "poll" in refused.value.message()
        copy_version(repo, 2)
        running.process.send_signal(signal.SIGHUP)  # the next poll is an hour away
        wait_for(lambda: client.is_model_ready("penguins", "2", headers=BEARER),
                 "version 2 after SIGHUP")
        assert running.process.poll() is None
        assert predict(client, headers=BEARER) == "2"


def test_the_workers_parent_passes_sighup_to_every_worker(copy_model, tmp_path):
    repo = copy_model("penguins")
    with run_server(repo, tmp_path, "--workers", "2", "--model-control", "poll",
                    "--poll-interval", "3600") as running:
        # "ready:" comes after a worker takes SIGHUP over; until then it ignores SIGHUP.
        wait_for(lambda: running.log().count("ready: 1 model versions") == 2,
                 "both workers ready")
        copy_version(repo, 2)
        running.process.send_signal(signal.SIGHUP)
        wait_for(lambda: running.log().count("loaded penguins version 2") == 2,
                 "both workers loaded version 2")
        assert running.process.poll() is None
        client = grpcclient.InferenceServerClient(running.url)
        assert predict(client) == "2"


def test_explicit_mode_needs_one_worker(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "zooserve", "serve", "--models", str(MODELS), "--workers", "2",
         "--model-control", "explicit", "--grpc-port", str(free_port()),
         "--http-port", str(free_port()), "--metrics-port", str(free_port())],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode != 0
    assert "--model-control explicit needs --workers 1" in result.stderr

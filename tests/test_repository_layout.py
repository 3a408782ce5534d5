"""The repository contract (`zooserve.repository.layout`): Triton's version-folder rule, and listing
a repository on the base install, with no ONNX Runtime, gRPC or Prometheus client at all."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap

import grpc
import pytest
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.helpers.paths import MODELS, ROOT
from tests.helpers.server import run_server
from zooserve.repository import layout


@pytest.mark.parametrize("text, version", [
    ("1", 1), ("12", 12), ("999999999999999999", 999999999999999999),
    ("007", None), ("0", None), ("-1", None), ("+1", None), (" 1", None), ("1e3", None),
    ("\uff11", None),  # a full-width digit: str.isdigit() says yes, Triton says no
    ("\u00b2", None),  # '²': str.isdigit() says yes, int() refuses it
    ("\u0661", None),  # Arabic-Indic one: int() reads it as 1, but it is no ASCII digit
    ("1\n", None), ("9" * 30, None),
    ("1" * 19, None), ("latest", None), ("", None),
])  # fmt: skip
def test_version_folder_rule(text, version):
    assert layout.parse_version(text) == version


def test_scan_skips_what_triton_skips(tmp_path, caplog):
    for folder in ("1", "2", "007", "0", "v3", ".staging-x"):
        (tmp_path / "m" / folder).mkdir(parents=True)
        (tmp_path / "m" / folder / layout.MODEL_FILE).write_bytes(b"")
    (tmp_path / "m" / "4").mkdir()  # a version folder without a model file
    with caplog.at_level(logging.WARNING):
        entries = layout.scan_repository(tmp_path)
    assert [(e.name, e.version) for e in entries] == [("m", 1), ("m", 2)]
    warned = caplog.text
    assert "007" in warned and "v3" in warned and "no model.onnx" in warned
    assert ".staging-x" not in warned


def test_card_and_hash_helpers(tmp_path):
    layout.write_card(tmp_path, {"task": "classification"})
    assert layout.read_card(tmp_path) == {"task": "classification"}
    assert layout.read_card(tmp_path / "absent") == {}
    (tmp_path / "f").write_bytes(b"abc")
    expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert layout.sha256_of_file(tmp_path / "f") == expected


# Every package that the base install does not have; importing any of them fails.
NOT_ON_THE_BASE_INSTALL = [
    "onnxruntime", "grpc", "grpc_health", "grpc_reflection", "prometheus_client", "bentoml",
    "tensorflow", "keras", "tf2onnx", "onnx", "pandas", "sklearn", "tritonclient",
]  # fmt: skip


def test_models_command_needs_nothing_beyond_the_base_install():
    script = textwrap.dedent(f"""
        import sys
        for name in {NOT_ON_THE_BASE_INSTALL!r}:
            sys.modules[name] = None  # makes `import name` raise ModuleNotFoundError
        from zooserve.cli import main
        sys.exit(main(["models", "--models", {str(MODELS)!r}]))
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("penguins ") for line in result.stdout.splitlines())


@pytest.mark.parametrize("version", ["007", "1" * 10_000, "\uff11"])
def test_odd_version_strings_are_not_found(server, version):
    request = service_pb2.ModelInferRequest(model_name="penguins", model_version=version)
    with grpc.insecure_channel(server.url) as channel, pytest.raises(grpc.RpcError) as caught:
        service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "versions served: 1" in caught.value.details()
    assert len(caught.value.details()) < 300


def test_odd_version_folders_are_skipped_and_the_server_starts(tmp_path, copy_model):
    """`²` (isdigit, not int), a 30-digit number (beyond int64) and a name with a newline
    are skipped with a warning, quoted so the newline cannot forge a log line; the real
    version serves."""
    repository = copy_model("penguins")
    odd = ["\u00b2", "9" * 30, "2\nERROR forged"]
    for name in odd:
        (repository / "penguins" / name).mkdir()
        (repository / "penguins" / name / layout.MODEL_FILE).write_bytes(b"not a model")
    with run_server(repository, tmp_path) as running:
        with grpc.insecure_channel(running.url) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            metadata = stub.ModelMetadata(service_pb2.ModelMetadataRequest(name="penguins"))
        log = running.log()
    assert list(metadata.versions) == ["1"]
    for name in odd:
        assert f"skipping {name!r}" in log, log
    assert "\nERROR forged" not in log

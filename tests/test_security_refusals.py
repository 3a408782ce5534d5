"""What the server refuses before it serves, and what it never does: TLS and token settings
that cannot be used end `zooserve serve` at once with one line, before any model loads; the
bearer parser and the security description never show the token; and "ONNX only": a version
folder holding only a pickle or a Keras file is skipped, nothing unpickled."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from tests.helpers.paths import MODELS, ROOT
from tests.helpers.pki import TOKEN, Pki, make_pki
from tests.helpers.server import free_port, run_server
from zooserve.serving.security import Security, bearer_problem


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# Settings that cannot be used: one line, a non-zero exit, before any model loads


def serve_fails(tmp_path: Path, *flags: str, env: dict | None = None) -> str:
    import os

    command = [sys.executable, "-m", "zooserve", "serve", "--models", str(MODELS),
               "--grpc-port", str(free_port()), "--http-port",
               str(free_port()), "--metrics-port", str(free_port()), *flags]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("ZOOSERVE_")}
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=60,
                          env={**environment, **(env or {})})
    assert done.returncode != 0, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zooserve serve: error: "), done.stderr
    assert "loaded" not in done.stdout + done.stderr  # no model was loaded
    return lines[0]


def test_unusable_tls_and_token_settings_stop_the_server_at_once(pki, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    short = tmp_path / "short"
    short.write_text("abc\n")
    cert, key = str(pki.server_cert), str(pki.server_key)
    cases = [
        (["--tls-cert", cert], {}, ["--tls-cert", "--tls-key"]),
        (["--tls-key", key], {}, ["--tls-key", "--tls-cert"]),
        (["--tls-cert", cert, "--tls-key", str(tmp_path / "missing.key")], {},
         ["--tls-key", "missing.key", "cannot read"]),
        (["--tls-cert", str(empty), "--tls-key", key], {}, ["--tls-cert", "no PEM"]),
        (["--tls-cert", cert, "--tls-key", str(pki.client_key)], {},
         ["not a usable certificate and matching"]),
        (["--tls-client-ca", str(pki.client_ca)], {}, ["--tls-client-ca", "mutual TLS"]),
        (["--auth-token-file", str(empty)], {}, ["--auth-token-file", "empty"]),
        (["--auth-token-file", str(short)], {}, ["at least 16"]),
        (["--auth-token-file", str(tmp_path / "nope")], {}, ["cannot read"]),
        (["--auth-token-file", str(pki.ca)], {"ZOOSERVE_AUTH_TOKEN": TOKEN},
         ["both", "ZOOSERVE_AUTH_TOKEN"]),
        ([], {"ZOOSERVE_AUTH_TOKEN": "two words and more than sixteen"}, ["without spaces"]),
        ([], {"ZOOSERVE_TLS_CERT": cert}, ["ZOOSERVE_TLS_KEY"]),
    ]
    for flags, env, fragments in cases:
        line = serve_fails(tmp_path, *flags, env=env)
        for fragment in fragments:
            assert fragment in line, (flags, line)
        assert TOKEN not in line and "sixteen" not in line


# The same checks in process: the token never in a message, the bearer parser


def test_bearer_problem_names_what_is_wrong():
    expected = TOKEN.encode()
    assert bearer_problem(f"Bearer {TOKEN}", expected) is None
    assert bearer_problem(f"bearer {TOKEN}".encode(), expected) is None
    assert "missing" in bearer_problem(None, expected)
    assert "not 'Bearer <token>'" in bearer_problem("Bearer ", expected)
    assert "not 'Bearer <token>'" in bearer_problem(f"Token {TOKEN}", expected)
    assert bearer_problem(f"Bearer {TOKEN}x", expected) == "wrong bearer token"
    assert bearer_problem(f"Bearer {TOKEN[:-1]}", expected) == "wrong bearer token"


def test_the_token_is_never_in_the_description():
    security = Security(token=TOKEN, token_source="ZOOSERVE_AUTH_TOKEN")
    assert TOKEN not in security.describe() and TOKEN not in repr(security)
    assert "ZOOSERVE_AUTH_TOKEN" in security.describe()


# ONNX only: a pickle or Keras file is never opened


class _Tripwire:
    """Unpickling this writes a file: the proof that something unpickled it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_the_service_code_has_no_way_to_unpickle():
    """No module of the service imports a loader that runs code from a model file."""
    import re

    forbidden = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|cloudpickle|joblib|keras|"
                           r"tensorflow|torch)\b|allow_pickle\s*=\s*True", re.MULTILINE)
    found = [f"{path.relative_to(ROOT)}: {match.group(0).strip()}"
             for folder in ("serving", "protocol", "spectra")
             for path in sorted((ROOT / "zooserve" / folder).rglob("*.py"))
             for match in forbidden.finditer(path.read_text())]
    assert found == []


def test_pickle_and_keras_files_are_never_loaded(copy_model, tmp_path):
    repo = copy_model("penguins")
    marker = tmp_path / "unpickled"
    trap = repo / "trap" / "1"
    trap.mkdir(parents=True)
    (trap / "model.pkl").write_bytes(pickle.dumps(_Tripwire(marker)))
    (trap / "model.keras").write_bytes(pickle.dumps(_Tripwire(marker)))  # not even a zip
    (trap / "card.json").write_text('{"name": "trap", "version": 1}')
    with run_server(repo, tmp_path) as running:
        client = grpcclient.InferenceServerClient(running.url)
        index = {(m.name, m.version) for m in client.get_model_repository_index().models}
        assert ("penguins", "1") in index
        assert not any(name == "trap" for name, _ in index)
        assert not client.is_model_ready("trap")
        client.close()
        assert "skipping" in running.log() and "no model.onnx" in running.log()
    assert not marker.exists()

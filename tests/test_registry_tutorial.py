"""docs/registry.md, run as written (tests/helpers/tutorial_pages.py says how) against a real
registry on loopback (TLS, a password): Alice makes a key pair, exports and signs a Keras
model, and pushes it; Bob pulls it with --verify-key, serves it with --verify-key and asks it.
The environment stands in for what the page asks the reader to set up: REGISTRY, the
`docker login` file, and the registry's CA (SSL_CERT_FILE). The Docker-only steps (```console
blocks) are run by tests/test_model_only_image.py instead."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT
from tests.helpers.tutorial_pages import STEP_TIMEOUT_S, blocks, page_env, run_page

PAGE = ROOT / "docs" / "registry.md"

KERAS_MODEL = """
import keras
from tests.helpers.own_keras_models import build_classifier, fit, penguin_like
keras.utils.set_random_seed(0)
x, classes = penguin_like(300, seed=1)
model = build_classifier(keras, x)
fit(model, x, classes, epochs=20)
model.save("my_model.keras")
"""


def test_the_page_has_the_steps_this_test_runs():
    commands = "\n".join(body for kind, body in blocks(PAGE) if kind == "sh")
    for step in ("openssl ecparam", "zooserve export my_model.keras", "--sign-key alice.key",
                 'zooserve push my_penguins "$REGISTRY/my_penguins:1"',
                 "--verify-key alice.pub", "zooserve serve --models bobs_models",
                 "zooserve predict my_penguins"):
        assert step in commands, step


@pytest.fixture(scope="module")
def tutorial(registry, tmp_path_factory):
    folder = tmp_path_factory.mktemp("registry-tutorial")
    env = {**page_env(), "REGISTRY": f"{registry.host}/lab",
           "DOCKER_CONFIG": str(registry.docker_config()), "SSL_CERT_FILE": str(registry.pki.ca),
           "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", KERAS_MODEL], cwd=folder, env=env, check=True,
                   capture_output=True, timeout=STEP_TIMEOUT_S)
    with run_page(PAGE, folder, env) as (port, printed):
        yield folder, printed


@pytest.mark.slow  # the page exports a Keras model with TensorFlow
def test_bob_gets_alices_model_signed_and_served(tutorial):
    folder, printed = tutorial
    alice = folder / "my_models" / "my_penguins" / "1"
    bob = folder / "bobs_models" / "my_penguins" / "1"
    assert (alice / "model.sig").is_file()
    assert sorted(p.name for p in bob.iterdir()) == sorted(p.name for p in alice.iterdir())
    for path in alice.iterdir():
        assert (bob / path.name).read_bytes() == path.read_bytes()
    assert "signature verified" in printed["pull"]
    assert printed["push"].startswith("pushed my_penguins to ")
    answer = printed["predict"]
    assert any(species in answer for species in ("Adelie", "Chinstrap", "Gentoo")), answer


SIZE = r"[0-9.]+ (?:B|kB|MB)"
SHAPES = {
    "push": re.compile(rf"pushed my_penguins to \S+/my_penguins:1@sha256:[0-9a-f.]+: \d+ files, "
                       rf"{SIZE} \({SIZE} sent\) in [0-9.]+ s"),
    "pull": re.compile(rf"pulled \S+/my_penguins:1@sha256:[0-9a-f.]+ into \S+/my_penguins/1: "
                       rf"\d+ files, {SIZE}, signature verified, in [0-9.]+ s"),
}


@pytest.mark.slow
def test_the_page_shows_lines_shaped_like_the_real_ones(tutorial):
    """The page's example output (its host and digest made up) has the shape of what the
    commands printed."""
    _, printed = tutorial
    shown = [body.strip() for kind, body in blocks(PAGE) if kind == "text"]
    for command, shape in SHAPES.items():
        assert shape.fullmatch(printed[command].strip()), printed[command]
        assert any(shape.fullmatch(line) for line in shown), command

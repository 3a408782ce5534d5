"""docs/sharing.md, run as written: train the lesson's penguin classifier in a script, save it,
`zooserve export`, `zooserve serve`, and a colleague's three lines that print species names.

The tutorial is read from the page itself, so the page cannot drift from what works: its
steps run as written, in an empty folder (tests/tutorial_pages.py says how).

Then the colleague's answer is compared with what Keras predicts on the same rows."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys

import pytest

from tests.helpers.paths import ROOT
from tests.helpers.tutorial_pages import STEP_TIMEOUT_S, blocks, page_env, run_page

PAGE = ROOT / "docs" / "sharing.md"

# Keras's own answer on the rows the colleague sends: the lesson's step 10, done by hand.
KERAS_SPECIES = """
import json, sys
import keras, pandas as pd
rows = pd.read_csv("penguins_test.csv").drop(columns="species")
labels = sys.argv[1].split(",")
y_pred = keras.models.load_model("my_model.keras").predict(rows.to_numpy("float32"), verbose=0)
print(json.dumps(list(pd.DataFrame(y_pred, columns=labels).idxmax(axis="columns"))))
"""


def _blocks() -> list[tuple[str, str]]:
    return blocks(PAGE)


def test_the_page_has_the_steps_this_test_runs():
    kinds = [kind for kind, _ in _blocks()]
    commands = "\n".join(body for kind, body in _blocks() if kind == "sh")
    assert kinds.count("python") == 2 and kinds.count("sh") == 4, kinds
    for step in ("python train_penguins.py", "zooserve export my_model.keras",
                 "zooserve serve --models my_models", "python predict_species.py"):
        assert step in commands


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    """Run the page's steps; yields the folder, the server's port and what each step printed."""
    folder = tmp_path_factory.mktemp("sharing")
    env = page_env()
    with run_page(PAGE, folder, env) as (port, printed):
        yield folder, port, printed, env


@pytest.mark.slow  # the tutorial trains and exports with TensorFlow
def test_the_colleague_gets_the_species_keras_predicts(tutorial):
    folder, _, printed, env = tutorial
    answer = ast.literal_eval(printed["predict_species.py"].strip())
    card = json.loads((folder / "my_models" / "my_penguins" / "1" / "card.json").read_text())
    keras_said = subprocess.run(
        [sys.executable, "-c", KERAS_SPECIES, ",".join(card["labels"])], cwd=folder, env=env,
        capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=True,
    )
    expected = json.loads(keras_said.stdout.strip().splitlines()[-1])
    test_rows = (folder / "penguins_test.csv").read_text().count("\n") - 1
    assert len(answer) == test_rows == 69
    assert answer == expected
    assert set(answer) <= {"Adelie", "Chinstrap", "Gentoo"}


@pytest.mark.slow  # the tutorial trains and exports with TensorFlow
def test_the_training_script_prints_the_labels_the_export_was_given(tutorial):
    folder, _, printed, _ = tutorial
    assert printed["train_penguins.py"].strip() == "species: ['Adelie', 'Chinstrap', 'Gentoo']"
    page = PAGE.read_text()
    assert "species: ['Adelie', 'Chinstrap', 'Gentoo']" in page
    assert "--labels Adelie,Chinstrap,Gentoo" in page


@pytest.mark.slow  # the tutorial trains and exports with TensorFlow
def test_the_card_says_where_the_model_came_from(tutorial):
    folder, _, _, _ = tutorial
    card = json.loads((folder / "my_models" / "my_penguins" / "1" / "card.json").read_text())
    assert card["labels"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert card["feature_names"] == [
        "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
    assert card["source"]["exported_from"] == "my_model.keras"
    # The page states the figure of its own run; a rerun may move it by two penguins.
    stated = re.search(r"accuracy on `penguins_test.csv`: ([0-9.]+)", PAGE.read_text())
    assert stated and abs(card["metrics"]["accuracy"] - float(stated.group(1))) <= 2 / 69
    assert card["onnx"]["parity_max_abs_diff"] <= card["onnx"]["parity_tolerance"] == 1e-4
    ledger = (folder / "results" / "ledger.csv").read_text()
    assert "my_penguins" in ledger


@pytest.mark.slow  # the tutorial trains and exports with TensorFlow
def test_the_page_shows_the_start_of_the_colleagues_answer(tutorial):
    _, _, printed, _ = tutorial
    answer = ast.literal_eval(printed["predict_species.py"].strip())
    shown = re.search(r"^\[('.*?), \.\.\.\]$", PAGE.read_text(), re.M)
    assert shown, "the page shows the answer as ['...', ...]"
    first = ast.literal_eval(f"[{shown.group(1)}]")
    assert answer[: len(first)] == first

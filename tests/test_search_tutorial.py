"""docs/search.md, run as written (tests/tutorial_pages.py says how): simulate an MGF library
and noisy queries, `zooserve library build`, `zooserve serve`, `zooserve search` and the
page's Python client script, in a folder holding a copy of the embedding model. Then every
query's best match must be the library entry it is a noisy copy of, and the page's shown
output must be what the steps printed."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from tests.helpers.paths import MODELS, ROOT
from tests.helpers.tutorial_pages import blocks, page_env, run_page
from zooserve.spectra.mgf import read_mgf

PAGE = ROOT / "docs" / "search.md"


def test_the_page_has_the_steps_this_test_runs():
    commands = "\n".join(body for kind, body in blocks(PAGE) if kind == "sh")
    for step in ("zooserve library simulate", "zooserve library build --spectra my_library.mgf",
                 "zooserve serve", "zooserve search --library my_library my_queries.mgf",
                 "python search_library.py"):
        assert step in commands


@pytest.fixture(scope="module")
def tutorial(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search")
    shutil.copytree(MODELS / "spectra_embedding", folder / "models" / "spectra_embedding")
    with run_page(PAGE, folder, page_env()) as (_, printed):
        yield folder, printed


def _originals(folder) -> dict[str, str]:
    return {q.id: q.fields["ORIGINAL"] for q in read_mgf(folder / "my_queries.mgf")}


def test_the_build_wrote_a_library_of_the_mgf(tutorial):
    folder, printed = tutorial
    manifest = json.loads((folder / "models" / "my_library" / "1" / "library.json").read_text())
    assert manifest["count"] == 3000 and manifest["description"] == "my reference spectra"
    built = printed["library"].splitlines()  # both `zooserve library` steps
    assert any(line.startswith("library my_library version 1: 3000 spectra") for line in built)


def test_zooserve_search_prints_each_query_s_original_first(tutorial):
    folder, printed = tutorial
    lines = printed["search"].splitlines()
    assert lines[0] == "library my_library version 1 (3000 spectra)"
    firsts = {row.split()[0]: row.split()[2] for row in lines[2:] if row.split()[1] == "1"}
    assert firsts == _originals(folder)
    shown = PAGE.read_text().split("zooserve search --library", 1)[1]
    for row in lines[:5]:  # the page shows the real first rows
        assert row in shown


def test_the_client_script_prints_what_the_page_shows(tutorial):
    folder, printed = tutorial
    answer = printed["search_library.py"].strip().splitlines()
    assert len(answer) == 4
    for line in answer:
        query, best = re.match(r"(\S+): (\S+) \(score", line).groups()
        assert best == _originals(folder)[query]
        assert line in PAGE.read_text()

"""`pip install .` installs one top-level package, `zooserve`: the wheel is built here, offline,
from a copy of the working tree (what git would commit: tracked files and new ones it does not
ignore), and its top-level names are read from the archive itself and from top_level.txt."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers.paths import ROOT


def source_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the tree (a build in place would leave build/ and
    egg-info behind, and race other runs)."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know the source files")
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    for name in source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp / "dist"), str(source)],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (path,) = (tmp / "dist").glob("zooserve-*.whl")
    return path


def test_the_wheel_installs_only_zooserve(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (dist_info,) = {name.split("/")[0] for name in names if ".dist-info/" in name}
        top_level = archive.read(f"{dist_info}/top_level.txt").decode() \
            if f"{dist_info}/top_level.txt" in names else None
    assert dist_info.startswith("zooserve-") and dist_info.endswith(".dist-info"), dist_info
    assert {name.split("/")[0] for name in names} == {"zooserve", dist_info}
    if top_level is not None:
        assert top_level.split() == ["zooserve"]


def test_the_wheel_carries_the_protocol_and_the_generated_modules(wheel):
    """The client's half of the wire travels with it: the one namespace holds everything."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for module in ("zooserve/__init__.py", "zooserve/client.py", "zooserve/cli.py",
                   "zooserve/protocol/codecs.py", "zooserve/serving/__init__.py",
                   "zooserve/repository/layout.py"):
        assert module in names or module.replace(".py", "/__init__.py") in names, module
    assert any(name.startswith("zooserve/protocol/generated/") and name.endswith("_pb2.py")
               for name in names)

"""Each server setting is declared once (zooserve/serving/settings.py); `zooserve serve`'s
flags, the reading of flags and variables and the README's table are made from it. These check
what is made against the declarations, and the README against what the module renders."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from zooserve.cli import build_parser
from zooserve.serving.settings import (
    TABLE_END,
    TABLE_START,
    Settings,
    SettingsError,
    declared,
    markdown_table,
    with_table,
)

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REGENERATE = "python -m zooserve.serving.settings --readme README.md"

# Public names: flags and variables people and manifests already use.
FLAGLESS = {"auth_token"}


def _readme_table(text: str) -> str:
    assert text.count(TABLE_START) == 1 and text.count(TABLE_END) == 1, (
        f"README.md must hold the settings table's markers once each: {TABLE_START!r}, "
        f"{TABLE_END!r}")
    return text.split(TABLE_START + "\n", 1)[1].split(TABLE_END, 1)[0]


def test_the_readme_table_is_the_one_the_declarations_make():
    table = _readme_table(README.read_text())
    assert table == markdown_table(), (
        "README.md's settings table differs from the declarations in "
        f"zooserve/serving/settings.py; write it anew with: {REGENERATE}")


def test_the_table_has_a_row_per_setting_naming_flag_variable_and_default():
    rows = markdown_table().splitlines()[2:]
    assert len(rows) == len(fields(Settings))
    by_variable = {row.split(" | ")[1].strip("`"): row for row in rows}
    assert by_variable["ZOOSERVE_GRPC_PORT"].startswith("| `--grpc-port` |")
    assert "| `8001` |" in by_variable["ZOOSERVE_GRPC_PORT"]
    assert by_variable["ZOOSERVE_AUTH_TOKEN"].startswith("| (none) |")


def test_the_regenerate_command_prints_the_table_and_rewrites_a_stale_readme(tmp_path):
    printed = subprocess.run(
        [sys.executable, "-m", "zooserve.serving.settings", "--markdown"],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout == markdown_table()

    stale = tmp_path / "README.md"
    stale.write_text(f"# title\n\n{TABLE_START}\n| old | table |\n{TABLE_END}\n\nafter\n")
    rewritten = subprocess.run(
        [sys.executable, "-m", "zooserve.serving.settings", "--readme", str(stale)],
        capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert rewritten.returncode == 0, rewritten.stderr
    assert stale.read_text() == (
        f"# title\n\n{TABLE_START}\n{markdown_table()}{TABLE_END}\n\nafter\n")


def test_a_readme_without_the_markers_is_refused():
    with pytest.raises(ValueError, match="lacks"):
        with_table("# no table here\n")


def _serve_actions() -> dict[str, object]:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    serve = commands.choices["serve"]
    return {a.dest: a for a in serve._actions if a.option_strings and a.dest != "help"}


def test_serve_has_a_flag_per_setting_with_its_variable_and_default_in_the_help():
    actions = _serve_actions()
    assert set(actions) == {f.name for f in fields(Settings)} - FLAGLESS
    for one in declared():
        if one.flag is None:
            continue
        action = actions[one.name]
        assert action.option_strings == [one.flag]
        assert action.default is None  # unset flags leave the variable its say
        assert one.help in action.help and one.variable in action.help
        assert action.help.endswith(f"[{one.variable}, {one.default}]" if one.default
                                    else f"[{one.variable}]")


def test_names_follow_the_field():
    for one in declared():
        assert one.variable == "ZOOSERVE_" + one.name.upper()
        assert one.flag in (None, "--" + one.name.replace("_", "-"))


@pytest.mark.parametrize("one", [d for d in declared() if d.default],
                         ids=lambda d: d.name)
def test_the_written_default_reads_back_as_the_default(one, monkeypatch):
    """What --help and the README say is the default is the default: given as the variable
    (or, for a setting whose default is chosen at run time, as that choice)."""
    monkeypatch.setenv("HOME", "/home/someone")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    value = Settings.from_sources({}, {one.variable: one.default})
    expected = getattr(Settings(), one.name)
    if one.name == "http_port":  # None: 8000 for `zooserve serve`, 3000 for the Bento
        expected = 8000
    if one.name == "cache_dir":
        value = Settings.from_sources(
            {}, {one.variable: one.default.replace("~", "/home/someone")})
    assert getattr(value, one.name) == expected


def test_a_flag_wins_over_its_variable_for_every_setting():
    """The flag's text is the one read: the value it makes, or an error naming the flag."""
    for one in declared():
        if one.flag is None:
            continue
        try:
            settings = Settings.from_sources({one.name: "not-a-value"}, {one.variable: "other"})
        except SettingsError as exc:
            assert str(exc).startswith(f"{one.flag}: "), one.name
        else:
            assert str(getattr(settings, one.name)) == "not-a-value", one.name

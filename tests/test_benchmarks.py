"""The benchmark harness keeps working: `benchmarks/run --tiny` (raw ONNX Runtime, the bare
grpc.aio server and zooserve on penguins, a second a point, no peers, no network) writes a
BENCHMARKS-style file whose tables hold positive figures. Figures only: nothing here says
how fast anything must be."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.json_body_memory import REFUSED_BY_LIMITS
from tests.helpers.paths import ROOT


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The data rows of the first table under the markdown heading that starts with heading."""
    section = text.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def _subsection_rows(text: str, heading: str) -> list[list[str]]:
    """The data rows of the table under the `### heading...` subsection."""
    section = text.split(f"\n### {heading}", 1)[1].split("\n#", 1)[0]
    table = section.split("\n|", 1)[1].split("\n\n", 1)[0]  # the first table only
    rows = ("|" + table).splitlines()
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def _number(cell: str) -> float:
    """The median of a 'median (min-max)' cell."""
    match = re.match(r"([\d,]+(?:\.\d+)?)", cell)
    assert match, f"no figure in {cell!r}"
    return float(match.group(1).replace(",", ""))


@pytest.mark.slow  # 20-35 s: raw ONNX Runtime, the bare gRPC floor and zooserve measured in turn
def test_tiny_run_writes_the_tables(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    kept = "<!-- kept: library_search -->\n## Search\nfigures\n<!-- /kept: library_search -->"
    output.write_text(f"# an older run\n\n{kept}\n")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--tiny", "--output", str(output),
         "--json", str(tmp_path / "points.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = output.read_text()
    for heading in ("## Machine", "## Versions", "## Load", "## Commands", "## Targets"):
        assert heading in text
    assert "an older run" not in text and kept in text  # another command's section survives

    rows = _table_rows(text, "penguins: throughput")
    seen = {(row[0], row[1]) for row in rows}
    for system in ("bare grpc.aio server (floor)", "zooserve gRPC unary"):
        for c in ("1", "2"):
            assert (system, c) in seen, f"no row for {system} at c={c}: {sorted(seen)}"
    for system, c, throughput, p50, p99, cpu, errors, _other in rows:
        assert _number(throughput) > 0, (system, c, throughput)
        assert _number(p50) > 0 and _number(p99) > 0, (system, c, p50, p99)
        assert _number(cpu) > 0, (system, c, cpu)
        assert errors == "0", (system, c, errors)

    floor = _table_rows(text, "Raw ONNX Runtime")
    assert floor and all(_number(row[3]) > 0 for row in floor)
    assert (tmp_path / "points.json").exists()


@pytest.mark.slow  # 20 s: a library built, then served and searched exact and ann
def test_the_library_search_benchmark_runs_and_writes_its_section(tmp_path: Path) -> None:
    """benchmarks/library_search.py at a toy size: every table gets its rows and the section
    replaces the previous one between its markers."""
    output = tmp_path / "BENCHMARKS.md"
    output.write_text("# head\n\n<!-- kept: library_search -->\nold\n"
                      "<!-- /kept: library_search -->\n\n## after\n")
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.library_search", "--sizes", "1500", "--duration",
         "0.5", "--warmup", "0.2", "--output", str(output), "--cache", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = output.read_text()
    assert text.startswith("# head") and text.rstrip().endswith("## after")
    assert "\nold\n" not in text and text.count("<!-- kept: library_search -->") == 1
    served = _subsection_rows(text, "Served search")
    assert {row[1] for row in served} == {"exact", "ann"}
    for row in served:
        assert _number(row[2]) > 0 and float(row[5]) >= 0.9, row
    built = _subsection_rows(text, "Build")
    assert float([row for row in built if row[1] == "ann"][0][7]) >= 0.99


def test_the_json_body_memory_benchmark_prints_its_table():
    """benchmarks/json_body_memory.py at a toy size: a row per shape and decoder, positive
    figures, every body accepted and its broken twin refused (no <!-- ... --> note), but for
    the shapes a limit refuses whole."""
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.json_body_memory", "--sizes", "0.1", "--legacy"],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    rows = [line.strip("|").split("|") for line in result.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| shape")]
    notes = [line for line in result.stdout.splitlines() if line.startswith("<!--")]
    assert {row[2].strip() for row in rows} == {"new", "legacy"}
    assert len(rows) >= 10, result.stdout
    for row in rows:
        assert all(float(cell) > 0 for cell in row[4:7:2]), row  # peak per byte
    noted = {note.removeprefix("<!-- ").split(" 0.1 ")[0] for note in notes}
    assert noted <= REFUSED_BY_LIMITS, notes

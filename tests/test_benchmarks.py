"""The benchmark harness keeps working: `benchmarks/run --tiny` (raw ONNX Runtime, the bare
grpc.aio server and zooserve on penguins, a second a point, no peers, no network) writes a
BENCHMARKS-style file whose tables hold positive figures. Figures only: nothing here says
how fast anything must be."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _table_rows(text: str, heading: str) -> list[list[str]]:
    """The data rows of the first table under the markdown heading that starts with heading."""
    section = text.split(f"\n## {heading}", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def _number(cell: str) -> float:
    """The median of a 'median (min-max)' cell."""
    match = re.match(r"([\d,]+(?:\.\d+)?)", cell)
    assert match, f"no figure in {cell!r}"
    return float(match.group(1).replace(",", ""))


def test_tiny_run_writes_the_tables(tmp_path: Path) -> None:
    output = tmp_path / "BENCHMARKS.md"
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--tiny", "--output", str(output),
         "--json", str(tmp_path / "points.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    text = output.read_text()
    for heading in ("## Machine", "## Versions", "## Load", "## Commands", "## Targets"):
        assert heading in text

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

"""The results ledger: one CSV row per trained (or exported) model, the lesson's "central
place"."""

from __future__ import annotations

import csv
import json
from pathlib import Path

COLUMNS = [
    "created",
    "model",
    "version",
    "task",
    "description",
    "metrics",
    "baselines",
    "test_set",
    "test_rows",
    "test_sha256",
    "git_commit",
    "epochs_run",
    "fit_seconds",
    "source",  # `zooserve export`: the file a model trained elsewhere came from
]


def append(path: Path, row: dict) -> None:
    """Append a row (metrics and baselines as JSON), writing the header for a new file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    if not new:
        _extend_header(path)
    values = {
        key: json.dumps(value, sort_keys=True) if isinstance(value, dict) else value
        for key, value in row.items()
    }
    with open(path, "a", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(values)


def _extend_header(path: Path) -> None:
    """A ledger written before the newer columns gets them in its header (its rows simply
    end early), so rows appended now line up with their names."""
    with open(path, newline="") as stream:
        header = next(csv.reader(stream), [])
    if header == COLUMNS or header != COLUMNS[: len(header)]:
        return
    with open(path, newline="") as stream:
        first, rest = stream.readline(), stream.read()
    ending = first[len(first.rstrip("\r\n")) :] or "\r\n"  # the csv module's own
    scratch = path.with_name(f".{path.name}.tmp")
    with open(scratch, "w", newline="") as stream:
        stream.write(",".join(COLUMNS) + ending + rest)
    scratch.replace(path)


def read(path: Path) -> list[dict]:
    """All rows, newest first."""
    if not path.exists():
        return []
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream))
    return sorted(rows, key=lambda row: row["created"], reverse=True)


def _compact(value: str) -> str:
    """`{"accuracy": 0.97}` -> `accuracy=0.97`; nested baselines as `name: k=v`."""
    if not value:
        return ""
    data = json.loads(value)
    parts = []
    for key, item in data.items():
        if isinstance(item, dict):
            parts.append(f"{key}: " + " ".join(f"{k}={v}" for k, v in item.items()))
        else:
            parts.append(f"{key}={item}")
    return "; ".join(parts)


def table(rows: list[dict]) -> str:
    """A fixed-width text table of the rows, in the order given."""
    headers = ["created", "model", "version", "metrics", "baselines", "test set", "commit"]
    lines = [
        [
            row["created"],
            row["model"],
            row["version"],
            _compact(row["metrics"]),
            _compact(row["baselines"]),
            f"{row['test_set']} ({row['test_rows']} rows, sha256 {row['test_sha256'][:12]})",
            row["git_commit"][:12] + ("-dirty" if row["git_commit"].endswith("-dirty") else ""),
        ]
        for row in rows
    ]
    widths = [max([len(h)] + [len(line[i]) for line in lines]) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    out += [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    return "\n".join(out)

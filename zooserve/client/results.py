"""What the client hands back: `ClientError` for every failure, a model's description
(`ModelInfo`, `TensorInfo`), the repository index (`ModelEntry`), a model's answer
(`Prediction`) and a library's (`SearchResults` of `Match`es). Plain data with ways to show
it (`describe`, `to_frame`); nothing here talks to a server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from zooserve.protocol.labels import labelled_output


class ClientError(Exception):
    """A call that failed. `code`: the gRPC status name (`NOT_FOUND`, `UNAVAILABLE`, ...), or
    None for a mistake the client found before sending anything. The message is the
    server's details, or one line saying what is wrong."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


# What the client reads about a model


@dataclass(frozen=True)
class TensorInfo:
    name: str
    datatype: str  # the protocol's name: FP32, INT64, BYTES, ...
    shape: tuple[int, ...]  # -1 for a free axis (the batch)


@dataclass(frozen=True)
class ModelInfo:
    """A model version's metadata and the parts of its ModelConfig a client needs."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    labels: list[str] | None
    feature_names: list[str] | None
    description: str
    task: str

    def input_names(self) -> list[str]:
        return [spec.name for spec in self.inputs]


@dataclass(frozen=True)
class ModelEntry:
    """One row of the repository index."""

    name: str
    version: str
    state: str  # READY, UNAVAILABLE, ...
    reason: str


@dataclass
class Prediction:
    """A model's answer: `outputs` by name as numpy arrays, and in labels where the model
    has them."""

    model: str
    version: str
    outputs: dict[str, np.ndarray]
    labels: list[str] | None
    index: Any = field(default=None, repr=False)  # the input DataFrame's index, if any

    def predicted(self) -> list[str]:
        """The most likely label of each row (the lesson's `idxmax(axis="columns")`)."""
        return [self.labels[i] for i in self._scores().argmax(axis=1).tolist()]

    def to_frame(self):
        """A pandas DataFrame: the labelled output with one column per label, as the lesson
        builds it with `pd.DataFrame(y_pred, columns=labels)`; for a model without labels,
        its outputs side by side (`name`, or `name_0`, `name_1`, ... for several columns).
        The rows keep the index of the DataFrame that was sent."""
        try:
            import pandas as pd
        except ImportError:
            raise ClientError("to_frame() needs pandas: pip install pandas") from None
        if self.labels:
            return pd.DataFrame(self._scores(), columns=list(self.labels), index=self.index)
        columns: dict[str, np.ndarray] = {}
        for name, array in self.outputs.items():
            if array.ndim not in (1, 2):
                raise ClientError(
                    f"output '{name}' has shape {list(array.shape)}; to_frame() takes outputs "
                    "of one or two axes (read .outputs instead)"
                )
            table = array.reshape(len(array), -1)
            if table.shape[1] == 1:
                columns[name] = table[:, 0]
            else:
                columns.update({f"{name}_{i}": table[:, i] for i in range(table.shape[1])})
        return pd.DataFrame(columns, index=self.index)

    def describe(self) -> str:
        """What `zooserve predict` prints: the model and version, then per row the label
        with every label's probability (or each output's values, for a model without
        labels)."""
        lines = [f"model {self.model} version {self.version}"]
        found = labelled_output(self.labels, self.outputs) if self.labels else None
        for name, array in self.outputs.items():
            if found is not None and name == found[0]:
                for row in found[1]:
                    scores = ", ".join(f"{k}={p:.4f}" for k, p in row.probabilities.items())
                    lines.append(f"{row.label}  ({name}: {scores})")
            else:
                lines.append(f"{name} {list(array.shape)}: {np.array2string(array, precision=4)}")
        return "\n".join(lines)

    __str__ = describe

    def _scores(self) -> np.ndarray:
        """The labelled output as rows of one score per label."""
        return self.outputs[self._scored_output()].reshape(-1, len(self.labels))

    def _scored_output(self) -> str:
        """The output that has one score per label, picked as zooserve.protocol.labels picks
        it; asked of no rows (a 2-D output cut to none), so the choice costs the same for
        any batch."""
        if not self.labels:
            raise ClientError(
                f"model '{self.model}' has no labels (its card names none); read .outputs"
            )
        probe = {n: (a[:0] if a.ndim == 2 else a) for n, a in self.outputs.items()}
        found = labelled_output(self.labels, probe)
        if found is None:
            raise ClientError(
                f"model '{self.model}' has {len(self.labels)} labels but no output with one "
                "value per label"
            )
        return found[0]


@dataclass
class Match:
    """One library entry found for a query: its id, its score (cosine of the embeddings,
    higher is closer) and its metadata (id, precursor_mz and the library MGF's other fields,
    lower-cased: name, charge, ...)."""

    id: str
    score: float
    metadata: dict


@dataclass
class SearchResults:
    """A library's answer to some query spectra: `queries` (their ids, in the order sent),
    `matches` (per query, best first; fewer than top_k, or none, where fewer entries
    qualified) and `library` (the library's summary from its ModelConfig: name, version,
    count, dimension, embedding model, backend)."""

    queries: list[str]
    matches: list[list[Match]]
    library: dict

    def to_frame(self):
        """A pandas DataFrame, one row per match: query, rank (1 = best), id, score, then
        the metadata's fields (a field named like one of those four is prefixed
        `metadata_`)."""
        try:
            import pandas as pd
        except ImportError:
            raise ClientError("to_frame() needs pandas: pip install pandas") from None
        fixed = ("query", "rank", "id", "score")
        columns = list(fixed)
        rows = []
        for query, found in zip(self.queries, self.matches, strict=True):
            for rank, match in enumerate(found, start=1):
                row = {"query": query, "rank": rank, "id": match.id, "score": match.score}
                for key, value in match.metadata.items():
                    if key == "id":
                        continue
                    name = f"metadata_{key}" if key in fixed else key
                    if name not in columns:
                        columns.append(name)
                    row[name] = value
                rows.append(row)
        return pd.DataFrame(rows, columns=columns)

    def describe(self) -> str:
        """What `zooserve search` prints: the library, then a table of every query's
        matches (a query with none gets one row saying so)."""
        library = self.library
        lines = [f"library {library.get('name', '?')} version {library.get('version', '?')} "
                 f"({library.get('count', '?')} spectra)"]
        rows = [("QUERY", "RANK", "ID", "SCORE", "PRECURSOR_MZ", "NAME")]
        for query, found in zip(self.queries, self.matches, strict=True):
            if not found:
                rows.append((query, "-", "-", "-", "-", "no match"))
            for rank, match in enumerate(found, start=1):
                precursor = match.metadata.get("precursor_mz")
                rows.append((
                    query, str(rank), match.id, f"{match.score:.4f}",
                    f"{precursor:.4f}" if isinstance(precursor, int | float) else "-",
                    str(match.metadata.get("name", "-")),
                ))
        widths = [max(len(row[i]) for row in rows) for i in range(5)]
        for row in rows:
            lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
                         + "  " + row[5])
        return "\n".join(lines)

    __str__ = describe

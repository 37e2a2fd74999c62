"""Reading a party's table and turning its columns into a float matrix, locally.

Each party encodes its own columns (standardise numbers, flag missing values, one-hot
categories; optionally a piecewise-linear encoding of each number over its quantile bins). The
encoding is fitted on the party's own rows only, so nothing leaves the party, and is
serialisable so inference encodes new rows exactly as training did.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

MAX_CATEGORIES = 64
"""A text column with more distinct values than this is an identifier, not a feature."""


class TableError(ValueError):
    """The table cannot be read or lacks a column it must have."""


def read_table(path: Path | str) -> pa.Table:
    """Read a CSV or Parquet file (by suffix) into an Arrow table."""
    p = Path(path)
    if not p.is_file():
        raise TableError(f"table {p} does not exist")
    try:
        if p.suffix.lower() in {".parquet", ".pq"}:
            return pq.read_table(p)
        return pacsv.read_csv(p)
    except (pa.ArrowInvalid, OSError) as exc:
        raise TableError(f"cannot read {p}: {exc}") from exc


def require_columns(table: pa.Table, columns: list[str], what: str) -> None:
    """Raise :class:`TableError` naming every missing column."""
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise TableError(f"{what} column(s) {missing} not in table (has {table.column_names})")


def key_strings(table: pa.Table, column: str) -> list[str]:
    """A key column as strings (integers and text keys join alike)."""
    require_columns(table, [column], "key")
    col = pc.cast(table.column(column), pa.string())
    if col.null_count:
        raise TableError(f"key column {column!r} has {col.null_count} empty value(s)")
    return [str(v) for v in col.to_pylist()]


def is_text(t: pa.DataType) -> bool:
    """Whether a column of type ``t`` holds text (it becomes categories)."""
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_dictionary(t))


def feature_columns(table: pa.Table, exclude: set[str]) -> tuple[list[str], list[str]]:
    """Columns usable as features, and text columns dropped as identifiers (too many values)."""
    keep: list[str] = []
    dropped: list[str] = []
    for name in table.column_names:
        if name in exclude:
            continue
        col = table.column(name)
        if is_text(col.type) and pc.count_distinct(col).as_py() > MAX_CATEGORIES:
            dropped.append(name)
        else:
            keep.append(name)
    return keep, dropped


class ColumnEncoding(BaseModel):
    """How one column becomes one or more model inputs."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["numeric", "categorical"]
    mean: float = 0.0
    std: float = 1.0
    missing_indicator: bool = False
    categories: list[str] = []
    edges: list[float] = []
    """Quantile bin edges of a numeric column (piecewise-linear encoding), or none."""

    @property
    def width(self) -> int:
        """Number of model inputs this column produces."""
        if self.kind == "categorical":
            return len(self.categories)
        return 1 + max(len(self.edges) - 1, 0) + int(self.missing_indicator)


def quantile_edges(finite: npt.NDArray[np.float64], bins: int) -> list[float]:
    """Distinct quantile edges of ``finite`` for ``bins`` bins, each a value of the column;
    none when fewer than two bins remain (a binary or constant column: its standardised value
    says everything)."""
    if bins < 2 or finite.size == 0:
        return []
    edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, bins + 1), method="lower"))
    return [float(e) for e in edges] if edges.size >= 3 else []


def piecewise_linear(
    values: npt.NDArray[np.float64], edges: list[float]
) -> npt.NDArray[np.float32]:
    """Piecewise-linear encoding (Gorishniy et al. 2022, "On Embeddings for Numerical Features
    in Tabular Deep Learning"): component t is 0 below bin t, 1 above it and the position
    inside it, so a value reads as "how far through each quantile bin". NaN encodes as 0."""
    e = np.asarray(edges, dtype=np.float64)
    left, width = e[:-1], np.diff(e)
    with np.errstate(invalid="ignore"):
        frac = np.clip((values[:, None] - left[None, :]) / width[None, :], 0.0, 1.0)
    return np.nan_to_num(frac, nan=0.0).astype(np.float32)


class EncoderState(BaseModel):
    """A fitted encoder, as JSON."""

    model_config = ConfigDict(extra="forbid")

    columns: list[ColumnEncoding]


def numeric_values(table: pa.Table, name: str) -> npt.NDArray[np.float64]:
    """Column ``name`` as float64 (booleans as 0/1, nulls as NaN)."""
    col = table.column(name)
    if pa.types.is_boolean(col.type):
        col = pc.cast(col, pa.int8())
    try:
        arr = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise TableError(f"column {name!r} is not numeric") from exc
    return np.asarray(arr, dtype=np.float64)


class FeatureEncoder:
    """Fitted per-party encoding of feature columns into a float32 matrix."""

    def __init__(self, state: EncoderState) -> None:
        self.state = state

    @classmethod
    def fit(cls, table: pa.Table, columns: list[str], *, bins: int = 0) -> FeatureEncoder:
        """Fit on ``columns`` of ``table`` (text columns become categories); with ``bins`` >= 2
        every numeric column also gets a piecewise-linear encoding over its quantile bins."""
        require_columns(table, columns, "feature")
        encs: list[ColumnEncoding] = []
        for name in columns:
            col = table.column(name)
            if is_text(col.type):
                values = pc.drop_null(pc.unique(pc.cast(col, pa.string()))).to_pylist()
                cats = sorted(str(v) for v in values)[:MAX_CATEGORIES]
                encs.append(ColumnEncoding(name=name, kind="categorical", categories=cats))
                continue
            arr = numeric_values(table, name)
            finite = arr[np.isfinite(arr)]
            mean = float(finite.mean()) if finite.size else 0.0
            std = float(finite.std()) if finite.size else 1.0
            encs.append(
                ColumnEncoding(
                    name=name,
                    kind="numeric",
                    mean=mean,
                    std=std if std > 1e-12 and math.isfinite(std) else 1.0,
                    missing_indicator=bool(finite.size < arr.size),
                    edges=quantile_edges(finite, bins),
                )
            )
        return cls(EncoderState(columns=encs))

    @property
    def width(self) -> int:
        """Number of model inputs."""
        return sum(c.width for c in self.state.columns)

    @property
    def feature_names(self) -> list[str]:
        """Names of the model inputs, in order."""
        names: list[str] = []
        for c in self.state.columns:
            if c.kind == "categorical":
                names.extend(f"{c.name}={v}" for v in c.categories)
            else:
                names.append(c.name)
                names.extend(f"{c.name}:bin{t}" for t in range(len(c.edges) - 1))
                if c.missing_indicator:
                    names.append(f"{c.name}:missing")
        return names

    def transform(self, table: pa.Table) -> npt.NDArray[np.float32]:
        """Encode ``table`` (must have every fitted column) into float32[rows, width]."""
        require_columns(table, [c.name for c in self.state.columns], "feature")
        parts: list[npt.NDArray[np.float32]] = []
        for c in self.state.columns:
            if c.kind == "categorical":
                values = pc.cast(table.column(c.name), pa.string())
                found = pc.index_in(values, value_set=pa.array(c.categories, pa.string()))
                where = found.to_numpy(zero_copy_only=False)  # NaN: null or unknown value
                hit = np.flatnonzero(~np.isnan(where))
                onehot = np.zeros((table.num_rows, len(c.categories)), dtype=np.float32)
                onehot[hit, where[hit].astype(np.int64)] = 1.0
                parts.append(onehot)
                continue
            arr = numeric_values(table, c.name)
            missing = ~np.isfinite(arr)
            z = np.where(missing, 0.0, (arr - c.mean) / c.std).astype(np.float32)
            parts.append(z[:, None])
            if c.edges:
                parts.append(piecewise_linear(arr, c.edges))
            if c.missing_indicator:
                parts.append(missing.astype(np.float32)[:, None])
        if not parts:
            return np.zeros((table.num_rows, 0), dtype=np.float32)
        return np.ascontiguousarray(np.concatenate(parts, axis=1))

"""Fitting and applying a party's encoder batch by batch, for tables larger than memory.

Two passes over a :class:`~services.engine.source.TableSource`: the first keeps, per column,
running statistics only (count, mean and sum of squared deviations of the finite values merged
across batches with Chan's formula; the distinct values of a text column, given up past
MAX_CATEGORIES; for quantile bins, every k-th row's value, at most about QUANTILE_SAMPLE of
them); the second encodes each batch into its rows of a preallocated float32 matrix.
The result equals :func:`services.engine.dataset.party_features` on the whole table (the same
columns, categories and missing-value flags; means and deviations within float rounding;
quantile edges exact up to QUANTILE_SAMPLE rows, from the systematic sample beyond).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from services.engine.source import TableSource
from services.engine.tabular import (
    MAX_CATEGORIES,
    ColumnEncoding,
    EncoderState,
    FeatureEncoder,
    is_text,
    numeric_values,
    quantile_edges,
)

QUANTILE_SAMPLE = 200_000
"""Rows whose values fit a streamed column's quantile bins (a systematic sample beyond)."""


@dataclass(slots=True)
class ColumnStats:
    """What fitting one column needs, accumulated over batches."""

    name: str
    text: bool
    rows: int = 0
    count: int = 0
    mean: float = 0.0
    m2: float = 0.0
    categories: set[str] = field(default_factory=set)
    bins: int = 0
    stride: int = 1
    """Every ``stride``-th row's value joins ``sample`` (for the quantile bins)."""
    sample: list[npt.NDArray[np.float64]] = field(default_factory=list)

    @property
    def identifier(self) -> bool:
        """A text column with too many distinct values to be a feature."""
        return self.text and len(self.categories) > MAX_CATEGORIES

    def update(self, table: pa.Table) -> None:
        """Add one batch's values of this column."""
        col = table.column(self.name)
        first = self.rows
        self.rows += table.num_rows
        if self.text:
            if not self.identifier:  # past the cap the column is dropped: stop collecting
                values = pc.drop_null(pc.unique(pc.cast(col, pa.string()))).to_pylist()
                self.categories.update(str(v) for v in values)
            return
        arr = numeric_values(table, self.name)
        if self.bins >= 2:
            picked = arr[(-first) % self.stride :: self.stride]
            self.sample.append(picked[np.isfinite(picked)])
        finite = arr[np.isfinite(arr)]
        if not finite.size:
            return
        n, mean = finite.size, float(finite.mean())
        m2 = float(np.square(finite - mean).sum())
        total = self.count + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total

    def encoding(self) -> ColumnEncoding:
        """The fitted encoding of this column (as :meth:`FeatureEncoder.fit` makes it)."""
        if self.text:
            cats = sorted(self.categories)[:MAX_CATEGORIES]
            return ColumnEncoding(name=self.name, kind="categorical", categories=cats)
        std = math.sqrt(self.m2 / self.count) if self.count else 1.0
        return ColumnEncoding(
            name=self.name,
            kind="numeric",
            mean=self.mean if self.count else 0.0,
            std=std if std > 1e-12 and math.isfinite(std) else 1.0,
            missing_indicator=self.count < self.rows,
            edges=quantile_edges(np.concatenate([np.zeros(0), *self.sample]), self.bins),
        )


def fit_streamed(
    source: TableSource, exclude: set[str], columns: list[str] | None = None, bins: int = 0
) -> tuple[FeatureEncoder | None, list[str]]:
    """Fit on ``columns`` (default: every column but ``exclude``) in one pass; also the text
    columns dropped as identifiers. None when no column is usable."""
    if columns is not None:
        source.require(columns, "contract")
    names = columns if columns is not None else [n for n in source.column_names if n not in exclude]
    stride = max(1, -(-source.num_rows // QUANTILE_SAMPLE))
    stats = [
        ColumnStats(n, is_text(source.schema.field(n).type), bins=bins, stride=stride)
        for n in names
    ]
    if names:
        for batch in source.batches(names):
            for s in stats:
                s.update(batch)
    dropped = [s.name for s in stats if s.identifier]
    kept = [s.encoding() for s in stats if not s.identifier]
    if not kept:
        return None, dropped
    return FeatureEncoder(EncoderState(columns=kept)), dropped


def party_features_streamed(
    source: TableSource,
    exclude: set[str],
    columns: list[str] | None = None,
    encoder: FeatureEncoder | None = None,
    bins: int = 0,
) -> tuple[FeatureEncoder | None, npt.NDArray[np.float32], list[str]]:
    """:func:`services.engine.dataset.party_features` in two passes over ``source`` (one with
    a fitted ``encoder``)."""
    dropped: list[str] = []
    if encoder is None:
        encoder, dropped = fit_streamed(source, exclude, columns, bins)
    if encoder is None:
        return None, np.zeros((source.num_rows, 0), dtype=np.float32), dropped
    matrix = np.empty((source.num_rows, encoder.width), dtype=np.float32)
    start = 0
    for batch in source.batches([c.name for c in encoder.state.columns]):
        matrix[start : start + batch.num_rows] = encoder.transform(batch)
        start += batch.num_rows
    if start != source.num_rows:
        raise ValueError(f"the table yielded {start} rows, its metadata says {source.num_rows}")
    return encoder, matrix, dropped

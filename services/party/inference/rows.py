"""A prediction request's rows, checked and encoded the way the model's training table was.

The columns are exactly the label party's feature columns (those its fitted encoder knows) and
each feature party's join key column: an unknown or missing column is refused by name, a value
of the wrong type by column and row. Each key is mapped to the handle the job's private
alignment gave it, locally: no key travels. A row naming a key the alignment did not share is
not predicted (handle -1); the answer says so for that row only, after the row was counted and
metered like any other (no free membership test of the intersection).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from services.engine.tabular import FeatureEncoder
from services.protocol.errors import Unprocessable
from services.protocol.messages import CellValue

_SHOWN = 20
"""Row indices listed per problem (the count is always complete)."""


@dataclass(frozen=True, slots=True)
class RequestRows:
    """Encoded rows: the label party's own features, the handles per feature party, and the
    rows as an Arrow table (for the contract's schema check)."""

    features: npt.NDArray[np.float32]
    handles: dict[str, npt.NDArray[np.int64]]
    """Feature party -> the handle of each row's key (-1: not shared by the alignment)."""
    table: pa.Table
    keys: dict[str, list[str]]
    """Feature party -> each row's join key (what the caller named; never leaves this party)."""

    @property
    def count(self) -> int:
        """Number of rows."""
        return int(self.features.shape[0])

    @property
    def predictable(self) -> npt.NDArray[np.bool_]:
        """Rows whose every key the alignment shared."""
        ok = np.ones(self.count, dtype=bool)
        for handles in self.handles.values():
            ok &= handles >= 0
        return ok


@dataclass(frozen=True, slots=True)
class RowSchema:
    """What a request row must hold for one served model."""

    encoder: FeatureEncoder | None
    keys: Mapping[str, str]
    """Feature party -> its join key column."""
    key_handles: Mapping[str, Mapping[str, int]]
    """Feature party -> key -> the job's handle of it."""

    @property
    def feature_columns(self) -> list[str]:
        """The label party's own feature columns, in the encoder's order."""
        return [] if self.encoder is None else [c.name for c in self.encoder.state.columns]

    @property
    def columns(self) -> list[str]:
        """Every column a row names: features, then the feature parties' keys."""
        return [*self.feature_columns, *self.keys.values()]

    def encode(self, rows: Sequence[Mapping[str, CellValue]]) -> RequestRows:
        """Check ``rows`` and encode them; :class:`Unprocessable` (422) naming what is wrong."""
        self._check_columns(rows)
        table = self._table(rows)
        keys = {party: table.column(col).to_pylist() for party, col in self.keys.items()}
        handles = {
            party: np.asarray(
                [self.key_handles.get(party, {}).get(k, -1) for k in keys[party]], dtype=np.int64
            )
            for party in self.keys
        }
        features = (
            self.encoder.transform(table)
            if self.encoder is not None
            else np.zeros((len(rows), 0), dtype=np.float32)
        )
        return RequestRows(features, handles, table, keys)

    def _check_columns(self, rows: Sequence[Mapping[str, CellValue]]) -> None:
        wanted = set(self.columns)
        missing: dict[str, list[int]] = {}
        unknown: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            for name in wanted.difference(row):
                missing.setdefault(name, []).append(i)
            for name in set(row).difference(wanted):
                unknown.setdefault(name, []).append(i)
        if not (missing or unknown):
            return
        parts = []
        if unknown:
            parts.append(f"unknown column(s) {', '.join(sorted(unknown))}")
        if missing:
            parts.append(f"missing column(s) {', '.join(sorted(missing))}")
        raise Unprocessable(
            "the rows do not match the model's columns: " + "; ".join(parts),
            detail={
                "unknown": _listing(unknown),
                "missing": _listing(missing),
                "expected": self.columns,
            },
        )

    def _table(self, rows: Sequence[Mapping[str, CellValue]]) -> pa.Table:
        """Typed columns (numbers as float64, categories and keys as text); wrong types are
        refused by column and row."""
        bad: dict[str, list[int]] = {}
        arrays: dict[str, pa.Array] = {}
        kinds = {} if self.encoder is None else {c.name: c.kind for c in self.encoder.state.columns}
        expected: dict[str, str] = {}
        for name in self.columns:
            values = [row[name] for row in rows]
            wrong = bad.setdefault(name, [])
            if kinds.get(name) == "numeric":
                expected[name] = "number or null"
                arrays[name] = pa.array(_numbers(values, wrong), pa.float64())
            else:
                key = name not in kinds
                expected[name] = "non-empty text (a key)" if key else "text or null"
                arrays[name] = pa.array(_texts(values, wrong, key), pa.string())
        bad = {k: v for k, v in bad.items() if v}
        if bad:
            raise Unprocessable(
                "values of the wrong type in column(s) " + ", ".join(sorted(bad)),
                detail={"columns": _listing(bad), "expected": {n: expected[n] for n in bad}},
            )
        return pa.table(arrays)


def _numbers(values: list[CellValue], bad: list[int]) -> list[float | None]:
    out: list[float | None] = []
    for i, v in enumerate(values):
        if v is None:
            out.append(None)
        elif isinstance(v, bool):
            out.append(float(v))
        elif isinstance(v, int | float):
            out.append(float(v))  # the encoder treats NaN and infinities as missing, as in tables
        else:
            bad.append(i)
            out.append(None)
    return out


def _texts(values: list[CellValue], bad: list[int], key: bool) -> list[str | None]:
    out: list[str | None] = []
    for i, v in enumerate(values):
        if isinstance(v, str) and (v or not key):
            out.append(v)
        elif key and isinstance(v, int) and not isinstance(v, bool):
            out.append(str(v))  # integer keys join as text, as in the tables
        elif v is None and not key:
            out.append(None)
        else:
            bad.append(i)
            out.append(None)
    return out


def _listing(found: Mapping[str, list[int]]) -> dict[str, dict[str, object]]:
    return {k: {"rows": v[:_SHOWN], "count": len(v)} for k, v in sorted(found.items())}

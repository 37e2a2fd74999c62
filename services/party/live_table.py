"""A party's table as it lives on: the configured table (version 1) and the versions appended
since, each a block of new rows (new paste lots) checked before it is used.

A new version arrives as rows through the party's authenticated ingestion endpoint
(``POST /v1/table/rows``) or as a whole new table file (``POST /v1/table/versions``, CSV or
Parquet: rows of known keys must be unchanged, the new keys are the version's rows). Every row is
checked against the table's columns and types, its key (present, new, once), and under a
registry against the contract schema of every contract this party has a job under: a version
with any refused row is refused whole (422 ``rows_refused`` listing each refused row and why),
nothing is loaded. An accepted version is written to ``<data_dir>/table-versions/`` (atomically)
before it is used, so a restarted party finds the same table; jobs bound to an earlier version
find their rows unchanged (versions only append).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from services.engine.source import TableSource
from services.engine.tabular import key_strings
from services.protocol.errors import ErrorCode, Unprocessable

VERSIONS_DIR = "table-versions"
MAX_ROWS = 100_000
"""Most rows one version may add."""
_SHOWN = 50
"""Refused rows listed in a refusal (the count is always complete)."""


@dataclass(frozen=True, slots=True)
class RowProblem:
    """Why one row of a new version is refused."""

    row: int
    reasons: list[str]


def refused(problems: Sequence[RowProblem], total: int) -> Unprocessable:
    """The refusal of a version: every refused row (the first 50 listed) and why."""
    return Unprocessable(
        f"{len(problems)} of {total} row(s) are refused; the version is not loaded",
        code=ErrorCode.ROWS_REFUSED,
        detail={
            "refused": len(problems),
            "rows": total,
            "problems": [{"row": p.row, "reasons": p.reasons} for p in problems[:_SHOWN]],
        },
    )


class LiveTable:
    """The configured table and the versions appended to it."""

    def __init__(self, path: Path, key_column: str | None, directory: Path) -> None:
        self.base = TableSource.open(path)
        self.key_column = key_column
        self.directory = directory
        self.increments: list[pa.Table] = []
        if directory.is_dir():
            for file in sorted(directory.glob("v*.parquet")):
                self.increments.append(pq.read_table(file).cast(self.base.schema))
        self._full: TableSource | None = None

    @property
    def version(self) -> int:
        """The current version (1: the configured table as it is)."""
        return 1 + len(self.increments)

    @property
    def boundaries(self) -> list[int]:
        """Rows of the table after each version, in order."""
        out, rows = [self.base.num_rows], self.base.num_rows
        for inc in self.increments:
            rows += inc.num_rows
            out.append(rows)
        return out

    def source(self) -> TableSource:
        """The table at its current version."""
        return self.at(self.version)

    def at(self, version: int) -> TableSource:
        """The table as it was at ``version`` (its first rows now)."""
        if version <= 1 or not self.increments:
            return self.base
        if version >= self.version and self._full is not None:
            return self._full
        parts = [self.base.read(), *self.increments[: version - 1]]
        table = TableSource(table=pa.concat_tables(parts), batch_rows=self.base.batch_rows)
        if version >= self.version:
            self._full = table
        return table

    def keys(self) -> set[str]:
        """Every key of the current table."""
        if self.key_column is None:
            return set()
        return set(key_strings(self.source().read([self.key_column]), self.key_column))

    def parse(self, rows: Sequence[Mapping[str, Any]]) -> pa.Table:
        """Rows of a new version as a table of this table's schema, or :func:`refused` naming
        every row with a missing or unknown column, a value of the wrong type or a bad key."""
        if not rows:
            raise Unprocessable("a version needs at least one row", code=ErrorCode.ROWS_REFUSED)
        if len(rows) > MAX_ROWS:
            raise Unprocessable(
                f"a version adds at most {MAX_ROWS} rows", code=ErrorCode.ROWS_REFUSED
            )
        schema = self.base.schema
        problems: dict[int, list[str]] = {}
        for i, row in enumerate(rows):
            missing = [n for n in schema.names if n not in row]
            unknown = sorted(set(row).difference(schema.names))
            if missing:
                problems.setdefault(i, []).append(f"missing column(s) {', '.join(missing)}")
            if unknown:
                problems.setdefault(i, []).append(f"unknown column(s) {', '.join(unknown)}")
        arrays = []
        for field in schema:
            values = [row.get(field.name) for row in rows]
            try:
                arrays.append(pa.array(values, type=field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                arrays.append(pa.nulls(len(rows), field.type))
                for i, v in enumerate(values):
                    try:
                        pa.array([v], type=field.type)
                    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                        problems.setdefault(i, []).append(
                            f"{field.name}: not a value of type {field.type}"
                        )
        table = pa.Table.from_arrays(arrays, schema=schema)
        self._check_keys(table, problems)
        if problems:
            raise refused([RowProblem(i, r) for i, r in sorted(problems.items())], len(rows))
        return table

    def new_rows(self, table: pa.Table) -> pa.Table:
        """A whole new table file as a version: its rows of known keys must equal the current
        ones (and every current key must be there); the others are the version's rows."""
        key = self.key_column
        if key is None or key not in table.column_names:
            raise Unprocessable(f"the new table has no key column {key!r}")
        try:
            table = table.select(self.base.schema.names).cast(self.base.schema)
        except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as exc:
            raise Unprocessable(
                f"the new table does not have this table's columns and types: {exc}",
                code=ErrorCode.ROWS_REFUSED,
            ) from exc
        current = self.source().read()
        known = {k: i for i, k in enumerate(key_strings(current, key))}
        offered = table.column(key).to_pylist()
        problems: dict[int, list[str]] = {}
        fresh: list[int] = []
        seen: set[str] = set()
        for i, raw in enumerate(offered):
            k = None if raw is None else str(raw)
            if k is None or k not in known:
                fresh.append(i)
                continue
            seen.add(k)
            if not _same(
                table.slice(i, 1).to_pylist()[0], current.slice(known[k], 1).to_pylist()[0]
            ):
                problems.setdefault(i, []).append(f"changes the row of key {k!r} (versions append)")
        gone = len(known) - len(seen)
        if gone:
            raise Unprocessable(
                f"the new table drops {gone} key(s) of the current one (versions append)",
                code=ErrorCode.ROWS_REFUSED,
                detail={"dropped": gone},
            )
        if problems:
            raise refused([RowProblem(i, r) for i, r in sorted(problems.items())], len(offered))
        added = table.take(pa.array(fresh, pa.int64()))
        if added.num_rows == 0:
            raise Unprocessable("the new table adds no row", code=ErrorCode.ROWS_REFUSED)
        return added

    def _check_keys(self, table: pa.Table, problems: dict[int, list[str]]) -> None:
        key = self.key_column
        if key is None:
            return
        known = self.keys()
        seen: dict[str, int] = {}
        for i, raw in enumerate(table.column(key).to_pylist()):
            k = None if raw is None else str(raw)
            if not k:
                problems.setdefault(i, []).append(f"{key}: the key is empty")
            elif k in known:
                problems.setdefault(i, []).append(f"{key}: key {k!r} is already in the table")
            elif k in seen:
                problems.setdefault(i, []).append(f"{key}: key {k!r} repeats row {seen[k]}")
            else:
                seen[k] = i

    def append(self, rows: pa.Table) -> int:
        """Write ``rows`` as the next version (atomically) and use it; the new version."""
        self.directory.mkdir(parents=True, exist_ok=True)
        version = self.version + 1
        final = self.directory / f"v{version:06d}.parquet"
        tmp = final.with_suffix(".tmp")
        pq.write_table(rows, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
        self.increments.append(rows)
        self._full = None
        return version


def _same(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two rows hold the same values (NaN equals NaN: a float column's missing value)."""

    def norm(v: Any) -> Any:
        return None if isinstance(v, float) and math.isnan(v) else v

    return a.keys() == b.keys() and all(norm(a[k]) == norm(b[k]) for k in a)


__all__ = ["MAX_ROWS", "VERSIONS_DIR", "LiveTable", "RowProblem", "refused"]

"""A party's table as a source of columns: a Parquet file read by row groups, or a table in memory.

A Parquet table is never read whole for training: the party reads the few columns it keeps as
they are (keys, label, row id: compact Arrow arrays, projected) and streams the feature columns
in batches of row groups twice, once to fit the encoder and once to fill the float32 matrix
(:mod:`services.engine.streamed`). A CSV table is read into memory (CSV has no row groups to
stream; convert a large table to Parquet).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from services.engine.tabular import TableError, read_table, require_columns

BATCH_ROWS = 65536
"""Rows per streamed batch (by default; Parquet row groups are read one at a time underneath)."""


class TableSource:
    """Columns of a party's table, streamed from Parquet or served from an Arrow table."""

    def __init__(
        self,
        table: pa.Table | None = None,
        parquet: pq.ParquetFile | None = None,
        *,
        batch_rows: int = BATCH_ROWS,
    ) -> None:
        if (table is None) == (parquet is None):
            raise ValueError("a source is either a table or a Parquet file")
        self.batch_rows = batch_rows
        self._table = table
        self._parquet = parquet
        if table is not None:
            self.schema: pa.Schema = table.schema
        else:
            assert parquet is not None
            self.schema = parquet.schema_arrow

    @classmethod
    def open(cls, path: Path | str, *, batch_rows: int = BATCH_ROWS) -> TableSource:
        """Open a Parquet file (its metadata only) or read a CSV file (by suffix)."""
        p = Path(path)
        if p.suffix.lower() not in {".parquet", ".pq"}:
            return cls(table=read_table(p), batch_rows=batch_rows)
        if not p.is_file():
            raise TableError(f"table {p} does not exist")
        try:
            return cls(parquet=pq.ParquetFile(p), batch_rows=batch_rows)
        except (pa.ArrowInvalid, OSError) as exc:
            raise TableError(f"cannot read {p}: {exc}") from exc

    @property
    def streamed(self) -> bool:
        """Whether columns come from a Parquet file, batch by batch."""
        return self._parquet is not None

    @property
    def num_rows(self) -> int:
        """Rows of the table."""
        if self._parquet is not None:
            return int(self._parquet.metadata.num_rows)
        assert self._table is not None
        return int(self._table.num_rows)

    @property
    def column_names(self) -> list[str]:
        """Column names, in order."""
        return list(self.schema.names)

    def require(self, columns: list[str], what: str) -> None:
        """Raise :class:`TableError` naming every column of ``columns`` the table lacks."""
        require_columns(self.schema.empty_table(), columns, what)

    def read(self, columns: list[str] | None = None) -> pa.Table:
        """``columns`` (all when None) as an Arrow table; from Parquet only those are decoded."""
        if self._table is not None:
            return self._table if columns is None else self._table.select(columns)
        assert self._parquet is not None
        try:
            return self._parquet.read(columns=columns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise TableError(f"cannot read columns {columns} of the table: {exc}") from exc

    def batches(self, columns: list[str]) -> Iterator[pa.Table]:
        """``columns`` in consecutive batches of at most ``batch_rows`` rows, in row order."""
        if self._table is not None:
            table = self._table.select(columns)
            for start in range(0, table.num_rows, self.batch_rows):
                yield table.slice(start, self.batch_rows)
            return
        assert self._parquet is not None
        try:
            for batch in self._parquet.iter_batches(batch_size=self.batch_rows, columns=columns):
                yield pa.Table.from_batches([batch])
        except (pa.ArrowInvalid, OSError) as exc:
            raise TableError(f"cannot read the table: {exc}") from exc


def as_source(table: pa.Table | TableSource) -> TableSource:
    """``table`` as a source (an Arrow table is served from memory)."""
    return table if isinstance(table, TableSource) else TableSource(table=table)

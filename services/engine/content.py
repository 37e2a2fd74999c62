"""Digests by content: of a table version a job uses, and of a segment's weights.

A job is bound to the rows it aligned and trained on by :func:`table_digest`: SHA-256 of the
columns the job uses, written as CSV in a canonical row order (sorted by every column, in the
given order), so re-exporting the same rows in another order keeps the digest and changing,
adding or removing a row changes it. With ``ordered`` the rows keep their order (a table whose
rows have no identity of their own: its row positions are part of what the job used).

:func:`weights_digest` hashes tensors by name, dtype, shape and bytes: equal weights give equal
digests whatever file they were saved in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from services.engine.source import TableSource, as_source


class _HashSink:
    """A write-only file that hashes what it is given."""

    def __init__(self) -> None:
        self.hash = hashlib.sha256()
        self.closed = False

    def write(self, data: bytes) -> int:
        self.hash.update(data)
        return len(data)

    def flush(self) -> None:
        """Nothing is buffered."""


def _plain(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """Dictionary-encoded text as plain text (sortable, written as its values)."""
    if pa.types.is_dictionary(column.type):
        return pc.cast(column, column.type.value_type)
    return column


def canonical_rows(table: pa.Table, *, ordered: bool = False) -> pa.Table:
    """``table`` with plain columns, its rows sorted by every column in order (unless
    ``ordered``)."""
    plain = pa.table(
        [_plain(table.column(i)) for i in range(table.num_columns)], table.column_names
    )
    if ordered or plain.num_rows < 2:
        return plain
    keys = [(name, "ascending", "at_end") for name in plain.column_names]
    return plain.take(pc.sort_indices(plain, sort_keys=keys))


def table_digest(
    table: pa.Table | TableSource, columns: list[str], *, ordered: bool = False
) -> str:
    """SHA-256 (hex) of ``columns`` of ``table`` as canonical CSV (see the module docstring)."""
    source = as_source(table)
    source.require(columns, "job")
    rows = canonical_rows(source.read(list(columns)), ordered=ordered)
    sink = _HashSink()
    pacsv.write_csv(rows, sink)
    return sink.hash.hexdigest()


def weights_digest(tensors: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of named tensors (torch or numpy): each name, dtype, shape and C-order
    bytes, by name."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        value = tensors[name]
        if hasattr(value, "detach"):  # a torch tensor
            value = value.detach().cpu().numpy()
        arr = np.ascontiguousarray(np.asarray(value))
        digest.update(f"{name}\0{arr.dtype.str}\0{list(arr.shape)}\0".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()

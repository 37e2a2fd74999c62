"""The revenue report as a file: CSV, JSON or an Excel workbook, money always exact.

CSV and JSON are :func:`services.finance.to_csv` and :func:`services.finance.to_json`. In the
workbook, counts and version numbers are numbers; money and percentages are text cells holding
the same decimal strings as the CSV (a spreadsheet number is a binary float: never for money).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from services.finance import COLUMNS, RevenueRow, to_csv, to_json

Format = Literal["csv", "json", "xlsx"]
NUMERIC_COLUMNS = frozenset({"contract_version", "model_version", "predictions"})
"""Columns written as numbers in the workbook (whole numbers: exact in any format)."""
SHEET = "revenue"


@dataclass(frozen=True)
class Rendered:
    """A report file: its bytes, media type and file name extension."""

    content: bytes
    media_type: str
    extension: str


MEDIA_TYPES: dict[Format, str] = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def render(rows: Sequence[RevenueRow], fmt: Format) -> Rendered:
    """``rows`` as a file in ``fmt``."""
    if fmt == "csv":
        content = to_csv(rows).encode("utf-8")
    elif fmt == "json":
        content = to_json(rows).encode("utf-8")
    else:
        content = to_xlsx(rows)
    return Rendered(content, MEDIA_TYPES[fmt], fmt)


def to_xlsx(rows: Sequence[RevenueRow]) -> bytes:
    """One sheet, a header of the report's columns, then one line per row."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(SHEET)
    sheet.append(list(COLUMNS))
    for row in rows:
        values = row.as_dict()
        sheet.append([values[c] if c in NUMERIC_COLUMNS else str(values[c]) for c in COLUMNS])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def from_xlsx(content: bytes) -> list[dict[str, str | int]]:
    """The rows of a workbook written by :func:`to_xlsx`, keyed by column (for tests and
    tools that read it back)."""
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(content), read_only=True)
    lines = list(book[SHEET].iter_rows(values_only=True))
    header = [str(c) for c in lines[0]]
    return [
        {h: v if isinstance(v, int) else str(v) for h, v in zip(header, line, strict=True)}
        for line in lines[1:]
    ]

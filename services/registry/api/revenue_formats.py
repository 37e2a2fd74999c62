"""The revenue report as a file: CSV, JSON or an Excel workbook, money always exact.

CSV and JSON are :func:`services.finance.to_csv` and :func:`services.finance.to_json` (money as
decimal strings). In the workbook, counts, versions, money and percentages are numeric cells, so
a spreadsheet sums them; money is written from :class:`~decimal.Decimal` (the cell holds the
exact decimal text, e.g. ``<v>0.05</v>``, never a float's expansion) with the currency's number
of decimals as its number format. A spreadsheet number holds 15 significant digits: an amount
with more (beyond a trillion euros to the cent) is written as a text cell rather than rounded.
The totals row (``row_type: total``) closes each currency.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from contracts.money import minor_unit_exponent, plain_decimal_string
from services.finance import COLUMNS, RevenueRow, format_minor, to_csv, to_json

Format = Literal["csv", "json", "xlsx"]
INTEGER_COLUMNS = frozenset({"contract_version", "model_version", "events", "predictions"})
EXACT_DIGITS = 15
"""Significant digits a spreadsheet number keeps exactly (an IEEE double; Excel shows 15)."""
"""Columns written as whole numbers in the workbook."""
MONEY_COLUMNS = frozenset({"unit_price", "gross_amount", "amount"})
"""Columns written as exact decimal numbers with the currency's decimals."""
PERCENT_COLUMNS = frozenset({"share_pct"})
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


def money_format(currency: str) -> str:
    """The number format of amounts in ``currency`` (``0.00`` for EUR, ``0`` for JPY)."""
    places = minor_unit_exponent(currency)
    return "0" if places == 0 else "0." + "0" * places


def exact_number(text: str) -> Decimal | str:
    """``text`` as a number a spreadsheet holds exactly, or as text when it cannot."""
    value = Decimal(text)
    return value if len(value.as_tuple().digits) <= EXACT_DIGITS else text


def money_cell(sheet: Any, text: str, currency: str) -> Any:
    """A workbook cell of an amount: numeric (exact), with the currency's decimals shown."""
    from openpyxl.cell import WriteOnlyCell

    # openpyxl writes a Decimal by its digits ("%.16g"); its type stubs omit Decimal
    cell = WriteOnlyCell(sheet, value=exact_number(text))  # type: ignore[arg-type]
    cell.number_format = money_format(currency)
    return cell


def to_xlsx(rows: Sequence[RevenueRow]) -> bytes:
    """One sheet, a header of the report's columns, then one line per row."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(SHEET)
    sheet.append(list(COLUMNS))
    for row in rows:
        values = row.as_dict()
        cells: list[Any] = []
        for column in COLUMNS:
            value = values[column]
            if value is None or value == "":
                cells.append(None)
            elif column in INTEGER_COLUMNS:
                cells.append(int(value))
            elif column in MONEY_COLUMNS:
                cells.append(money_cell(sheet, str(value), row.currency))
            elif column in PERCENT_COLUMNS:
                cells.append(exact_number(str(value)))
            else:
                cells.append(str(value))
        sheet.append(cells)
    book.properties.created = book.properties.modified = FIXED_TIME
    out = io.BytesIO()
    book.save(out)
    return _fixed_zip_times(out.getvalue())


FIXED_TIME = datetime(2000, 1, 1, tzinfo=UTC).replace(tzinfo=None)
"""The workbook's creation and modification time: fixed, so the same rows give the same bytes
(the console's download and the API's are byte-for-byte the same file)."""


_MODIFIED = re.compile(rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)")


def _fixed_zip_times(content: bytes) -> bytes:
    """The workbook with every zip member dated 1980-01-01 and the document's modification
    time fixed (openpyxl stamps the time of writing), members and their order unchanged."""
    source = zipfile.ZipFile(io.BytesIO(content))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.infolist():
            info = zipfile.ZipInfo(member.filename, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = member.external_attr
            data = source.read(member.filename)
            if member.filename == "docProps/core.xml":  # openpyxl sets modified when saving
                data = _MODIFIED.sub(rb"\g<1>2000-01-01T00:00:00Z\g<2>", data)
            target.writestr(info, data)
    return out.getvalue()


def from_xlsx(content: bytes) -> list[dict[str, str | int | None]]:
    """The rows of a workbook written by :func:`to_xlsx`, keyed by column, in the JSON export's
    terms (money and percentages as exact decimal strings: the numeric cells hold at most 15
    significant digits, which a float keeps exactly), for tests and tools that read it back."""
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(content), read_only=True)
    lines = list(book[SHEET].iter_rows(values_only=True))
    header = [str(c) for c in lines[0]]
    out: list[dict[str, str | int | None]] = []
    for line in lines[1:]:
        raw = dict(zip(header, line, strict=True))
        currency = str(raw["currency"])
        row: dict[str, str | int | None] = {}
        for column in header:
            value = raw[column]
            if column in INTEGER_COLUMNS:
                row[column] = None if value is None else int(str(value))
            elif value is None:
                row[column] = ""
            elif column in MONEY_COLUMNS:
                units = Decimal(repr(value)).scaleb(minor_unit_exponent(currency))
                row[column] = format_minor(int(units.to_integral_value()), currency)
            elif column in PERCENT_COLUMNS:
                row[column] = _percent(Decimal(repr(value)))
            else:
                row[column] = str(value)
        out.append(row)
    return out


def _percent(value: Decimal) -> str:
    return plain_decimal_string(value.normalize()) if value else "0"

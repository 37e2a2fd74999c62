"""A buyer's billed events as a file: CSV or an Excel workbook, with a totals row per currency.

Same conventions as the revenue report (:mod:`services.registry.api.revenue_formats`): CSV money
as exact decimal strings; in the workbook counts and money are numeric cells, money written from
:class:`~decimal.Decimal` with the currency's decimals as number format.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from services.registry.api.revenue_formats import MEDIA_TYPES, Rendered, money_cell
from services.registry.store.usage_listing import BilledEvent, ListingTotal

COLUMNS = (
    "row_type",
    "event_id",
    "occurred_at",
    "contract_id",
    "contract_version",
    "model_version",
    "payer_org_id",
    "events",
    "predictions",
    "unit_price",
    "currency",
    "amount",
)
SHEET = "usage"


def _lines(events: Sequence[BilledEvent], totals: Sequence[ListingTotal]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for e in events:
        row = asdict(e)
        row["occurred_at"] = e.occurred_at.isoformat().replace("+00:00", "Z")
        out.append({"row_type": "line", "events": 1, **row})
    for t in totals:
        out.append({"row_type": "total", **asdict(t)})
    return [{c: row.get(c) for c in COLUMNS} for row in out]


def render_events(
    events: Sequence[BilledEvent], totals: Sequence[ListingTotal], fmt: str
) -> Rendered:
    """The listing as CSV or XLSX (``fmt``)."""
    rows = _lines(events, totals)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for row in rows:
            writer.writerow(["" if row[c] is None else row[c] for c in COLUMNS])
        return Rendered(out.getvalue().encode("utf-8"), MEDIA_TYPES["csv"], "csv")
    return Rendered(_xlsx(rows), MEDIA_TYPES["xlsx"], "xlsx")


def _xlsx(rows: list[dict[str, Any]]) -> bytes:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(SHEET)
    sheet.append(list(COLUMNS))
    for row in rows:
        cells: list[Any] = []
        for column in COLUMNS:
            value = row[column]
            if value is None or value == "":
                cells.append(None)
            elif column in ("unit_price", "amount"):
                cells.append(money_cell(sheet, str(value), row["currency"]))
            else:
                cells.append(value)
        sheet.append(cells)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()

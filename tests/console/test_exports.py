"""The revenue workbook is the same bytes whenever it is written (what lets the console's
download be byte for byte the API's)."""

from __future__ import annotations

import io
import time
import zipfile

from services.finance import RevenueRow
from services.registry.api.revenue_formats import from_xlsx, to_xlsx


def _row() -> RevenueRow:
    return RevenueRow(
        row_type="line",
        period_start="2026-12-01T00:00:00+00:00",
        period_end="2027-01-01T00:00:00+00:00",
        contract_id="c1",
        contract_version=1,
        contract_title="Paste quality",
        model_version=1,
        payer_org_id="oem",
        party_org_id="pcb",
        party_name="pcb",
        role="label",
        events=2,
        predictions=42,
        unit_price="0.05",
        currency="EUR",
        gross_amount="2.10",
        share_basis="fixed",
        share_pct="50",
        amount="1.05",
    )


def test_the_workbook_does_not_carry_the_time_it_was_written() -> None:
    first = to_xlsx([_row()])
    time.sleep(2.1)  # zip member times have two-second resolution, document times one second
    second = to_xlsx([_row()])
    assert first == second
    members = zipfile.ZipFile(io.BytesIO(first)).infolist()
    assert {m.date_time for m in members} == {(1980, 1, 1, 0, 0, 0)}
    core = zipfile.ZipFile(io.BytesIO(first)).read("docProps/core.xml").decode()
    assert "2000-01-01T00:00:00Z</dcterms:modified>" in core
    assert from_xlsx(first)[0]["amount"] == "1.05"

"""Finance exports store money as numbers (issue 19): in the revenue workbook every amount is a
numeric cell with the currency's format, so a spreadsheet's SUM over the lines gives the totals
row, and each line names its payer."""

from __future__ import annotations

import io
from decimal import Decimal

import httpx
import pytest
from fastapi import FastAPI
from openpyxl import load_workbook

from services.finance import COLUMNS
from tests.registry.test_reports import november, report
from tests.registry.usage_util import Metered, metered, model_version


@pytest.fixture
async def world(app: FastAPI, client: httpx.AsyncClient, admin_token: str) -> Metered:
    w = await metered(app, client, admin_token)
    assert await model_version(w, w.contract_id) == 2
    return w


async def test_amounts_are_numbers_that_sum_to_the_total(world: Metered) -> None:
    november(world)
    r = await report(world, await world.finance_auth(), period="2026-11", format="xlsx")
    sheet = load_workbook(io.BytesIO(r.content)).active
    assert sheet is not None
    header = [c.value for c in sheet[1]]
    assert header == list(COLUMNS)
    col = {name: i for i, name in enumerate(header)}
    body = [list(row) for row in sheet.iter_rows(min_row=2)]
    lines = [row for row in body if row[col["row_type"]].value == "line"]
    (total,) = [row for row in body if row[col["row_type"]].value == "total"]
    assert lines and all(row[col["payer_org_id"]].value == "buyer" for row in lines)
    for name in ("amount", "gross_amount", "unit_price"):
        cells = [row[col[name]] for row in [*lines, total] if row[col[name]].value is not None]
        assert cells and all(c.data_type == "n" for c in cells), name
        assert all("0.00" in c.number_format for c in cells), name
    amounts = sum(Decimal(str(row[col["amount"]].value)) for row in lines)
    assert amounts == Decimal(str(total[col["amount"]].value)) == Decimal("1.25")

"""Revenue report rows and their CSV/JSON exports from the example contracts."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts import Contract, validate_contract
from services.finance import (
    COLUMNS,
    ContractRef,
    ReportError,
    UsageTotal,
    format_minor,
    parse_period,
    party_totals,
    revenue_rows,
    to_csv,
    to_json,
    with_totals,
)
from tests.contracts.util import JPY, PCB, STENCIL, document

NOV = parse_period("2026-11")
ISSUE_COLUMNS = (
    "row_type period_start period_end contract_id contract_version contract_title model_version "
    "payer_org_id party_org_id party_name role events predictions unit_price currency "
    "gross_amount share_basis share_pct amount"
).split()
"""Issue 6's columns, with issue 14's row type (line or total), payer and event count."""


def _contract(path: object) -> Contract:
    return validate_contract(document(path))  # type: ignore[arg-type]


REFS = [
    ContractRef("c-pcb", 1, _contract(PCB)),
    ContractRef("c-jpy", 2, _contract(JPY)),
    ContractRef("c-stencil", 1, _contract(STENCIL)),
]
SHAPLEY = {"pcb": 0.5, "paste": 0.3, "stencil": 0.2}


def test_columns_are_the_issue_columns() -> None:
    assert list(COLUMNS) == ISSUE_COLUMNS


def test_rows_for_fixed_and_contribution_contracts() -> None:
    usage = [
        UsageTotal("c-stencil", 1, 3, 1001, SHAPLEY),
        UsageTotal("c-pcb", 1, 2, 333),
        UsageTotal("c-jpy", 2, 1, 7),
    ]
    rows = revenue_rows(*NOV, usage, REFS)
    assert [(r.contract_id, r.party_name) for r in rows] == [
        ("c-jpy", "kawa"),
        ("c-jpy", "hoshi"),
        ("c-pcb", "pcb"),
        ("c-pcb", "paste"),
        ("c-pcb", "oem"),
        ("c-stencil", "pcb"),
        ("c-stencil", "paste"),
        ("c-stencil", "stencil"),
        ("c-stencil", "oem"),
    ]
    jpy = rows[:2]
    assert {r.gross_amount for r in jpy} == {"56"} and {r.unit_price for r in jpy} == {"8"}
    assert [r.amount for r in jpy] == ["35", "21"]  # 62.5% of 56 = 35, 37.5% = 21
    assert [r.role for r in jpy] == ["label", "feature"]
    pcb = rows[2:5]
    assert {r.gross_amount for r in pcb} == {"16.65"} and pcb[0].unit_price == "0.05"
    assert [r.share_pct for r in pcb] == ["50", "35", "15"]
    # 832.5 / 582.75 / 249.75 cents: the leftover cent goes to the largest remainder (paste).
    assert [r.amount for r in pcb] == ["8.32", "5.83", "2.50"]
    assert pcb[2].role == "owner" and pcb[2].party_org_id == "nordwerk-automotive"
    assert pcb[0].period_start == "2026-11-01T00:00:00Z"
    assert pcb[0].period_end == "2026-12-01T00:00:00Z"
    stencil = rows[5:]
    assert {r.share_basis for r in stencil} == {"contribution:shapley"}
    assert [r.share_pct for r in stencil] == ["47.5", "25.5", "17", "10"]
    assert sum(Decimal(r.amount) for r in stencil) == Decimal("50.05")
    for r in rows:
        assert all(isinstance(getattr(r, c), str | int) for c in COLUMNS)
        assert not any(isinstance(getattr(r, c), float) for c in COLUMNS)


@given(
    st.lists(
        st.tuples(st.sampled_from(["c-pcb", "c-jpy", "c-stencil"]), st.integers(1, 5)),
        unique=True,
        max_size=6,
    ),
    st.lists(st.integers(0, 10**9), min_size=6, max_size=6),
)
def test_each_group_sums_to_its_gross(groups: list[tuple[str, int]], counts: list[int]) -> None:
    version = {"c-pcb": 1, "c-jpy": 2, "c-stencil": 1}
    usage = [
        UsageTotal(cid, version[cid], mv, n, SHAPLEY if cid == "c-stencil" else None)
        for (cid, mv), n in zip(groups, counts, strict=False)
    ]
    rows = revenue_rows(*NOV, usage, REFS)
    sums: dict[tuple[str, int], Decimal] = {}
    for r in rows:
        key = (r.contract_id, r.model_version)
        sums[key] = sums.get(key, Decimal(0)) + Decimal(r.amount)
        assert Decimal(r.gross_amount) == r.predictions * Decimal(r.unit_price)
        if r.predictions == 0:
            assert Decimal(r.amount) == 0 and r.amount in {"0", "0.00"}
    for r in rows:
        assert sums[(r.contract_id, r.model_version)] == Decimal(r.gross_amount)


def test_zero_usage_gives_zero_amounts_and_no_usage_no_rows() -> None:
    rows = revenue_rows(*NOV, [UsageTotal("c-pcb", 1, 1, 0)], REFS)
    assert [r.amount for r in rows] == ["0.00", "0.00", "0.00"]
    assert {r.gross_amount for r in rows} == {"0.00"}
    assert revenue_rows(*NOV, [], REFS) == []


def test_exports_keep_money_as_strings() -> None:
    rows = revenue_rows(*NOV, [UsageTotal("c-pcb", 1, 2, 333), UsageTotal("c-jpy", 2, 1, 7)], REFS)
    parsed = list(csv.DictReader(io.StringIO(to_csv(rows))))
    assert list(parsed[0]) == ISSUE_COLUMNS
    assert [p["amount"] for p in parsed] == [r.amount for r in rows]
    assert parsed[2]["gross_amount"] == "16.65" and parsed[0]["amount"] == "35"
    data = json.loads(to_json(rows), parse_float=lambda s: pytest.fail(f"float {s} in JSON"))
    assert [list(d) for d in data] == [ISSUE_COLUMNS] * len(rows)
    assert data[2]["amount"] == "8.32" and data[2]["predictions"] == 333
    for d in data:
        for col in ("unit_price", "gross_amount", "share_pct", "amount"):
            assert isinstance(d[col], str)
    assert to_csv([]).strip() == ",".join(ISSUE_COLUMNS)
    assert json.loads(to_json([])) == []


def test_totals_rows_per_currency_and_payers_kept_apart() -> None:
    usage = [
        UsageTotal("c-pcb", 1, 2, 333, payer_org_id="oem-org", events=4),
        UsageTotal("c-pcb", 1, 2, 7, payer_org_id="pcb-org", events=1),
        UsageTotal("c-jpy", 2, 1, 7, payer_org_id="kawa-org", events=2),
    ]
    rows = with_totals(revenue_rows(*NOV, usage, REFS))
    lines = [r for r in rows if r.row_type == "line"]
    assert [(r.contract_id, r.payer_org_id, r.party_name) for r in lines][2:] == [
        ("c-pcb", "oem-org", "pcb"),
        ("c-pcb", "oem-org", "paste"),
        ("c-pcb", "oem-org", "oem"),
        ("c-pcb", "pcb-org", "pcb"),
        ("c-pcb", "pcb-org", "paste"),
        ("c-pcb", "pcb-org", "oem"),
    ]
    totals = {r.currency: r for r in rows if r.row_type == "total"}
    assert [r.row_type for r in rows[-2:]] == ["total", "total"]
    eur, jpy = totals["EUR"], totals["JPY"]
    assert (eur.events, eur.predictions, eur.gross_amount, eur.amount) == (5, 340, "17.00", "17.00")
    assert (jpy.events, jpy.predictions, jpy.gross_amount, jpy.amount) == (2, 7, "56", "56")
    assert eur.contract_version is None and eur.party_name == ""
    assert with_totals([]) == []
    with pytest.raises(ReportError, match="given twice"):
        revenue_rows(*NOV, [usage[0], usage[0]], REFS)


def test_party_totals() -> None:
    usage = [UsageTotal("c-pcb", 1, 1, 100), UsageTotal("c-pcb", 1, 2, 233)]
    totals = party_totals(revenue_rows(*NOV, usage, REFS))
    assert totals == {
        ("nordwerk-automotive", "oem", "EUR"): "2.50",
        ("lumen-pcb", "pcb", "EUR"): "8.32",
        ("solvia-paste", "paste", "EUR"): "5.83",
    }


@pytest.mark.parametrize(
    ("units", "currency", "text"),
    [
        (0, "EUR", "0.00"),
        (5, "EUR", "0.05"),
        (1230, "EUR", "12.30"),
        (1230, "JPY", "1230"),
        (7, "KWD", "0.007"),
        (12345, "CLF", "1.2345"),
        (10**30 + 1, "EUR", "10000000000000000000000000000.01"),
    ],
)
def test_format_minor(units: int, currency: str, text: str) -> None:
    assert format_minor(units, currency) == text


@pytest.mark.parametrize(
    ("usage", "match"),
    [
        ([UsageTotal("nope", 1, 1, 1)], "unknown contract"),
        ([UsageTotal("c-pcb", 9, 1, 1)], "unknown contract"),
        ([UsageTotal("c-pcb", 1, 1, -1)], "non-negative"),
        ([UsageTotal("c-pcb", 1, 1, 1), UsageTotal("c-pcb", 1, 1, 2)], "twice"),
        ([UsageTotal("c-stencil", 1, 1, 5)], "no contributions"),
        ([UsageTotal("c-stencil", 1, 1, 5, {"stranger": 1.0})], "neither a party"),
    ],
)
def test_bad_input_raises_report_error(usage: list[UsageTotal], match: str) -> None:
    with pytest.raises(ReportError, match=match):
        revenue_rows(*NOV, usage, REFS)


def test_period_must_be_ordered() -> None:
    with pytest.raises(ReportError):
        revenue_rows(NOV[1], NOV[0], [], REFS)

"""Revenue report rows: one per contract x model version x payer x payee, money as decimal
strings, and a totals row per currency.

Inputs are usage totals already summed per (contract, contract version, model version, payer)
over a period, with their event counts, and the contract documents they refer to. Gross is
predictions x unit price in integer minor units (so the sum of the payer's events' amounts,
each count x price, to the cent); the payees' amounts are allocated from it by largest
remainder, so each group's amounts sum exactly to its gross. A usage total of zero predictions
gives rows with zero amounts; a group with no usage total gives no rows. :func:`with_totals`
appends one ``total`` row per currency: events, predictions and gross summed over the groups,
amounts over the rows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from decimal import Decimal

from contracts.commercial import FixedShares
from contracts.money import minor_unit_exponent, plain_decimal_string
from contracts.spec import Contract
from services.finance.allocation import allocate, gross_minor, shares_for


class ReportError(ValueError):
    """Report input that does not fit together (unknown contract, duplicate or bad usage)."""

    code = "report_invalid"


@dataclass(frozen=True)
class ContractRef:
    """One agreed version of a contract as the registry stores it."""

    contract_id: str
    version: int
    contract: Contract


@dataclass(frozen=True)
class UsageTotal:
    """Predictions served in the period under one contract version and model version.

    ``contributions`` (payee -> measured contribution) are those stored with the model version;
    they are required when the contract shares revenue by contribution.
    """

    contract_id: str
    contract_version: int
    model_version: int
    predictions: int
    contributions: Mapping[str, float | Decimal] | None = None
    payer_org_id: str = ""
    """The organisation billed (the verified caller of the events)."""
    events: int = 0
    """Usage events (prediction calls) summed in ``predictions``."""


LINE, TOTAL = "line", "total"


@dataclass(frozen=True)
class RevenueRow:
    """One line of the revenue report. Money and percentages are exact decimal strings.

    ``row_type`` is ``line`` for a payee's share of a (contract, model version, payer) group,
    ``total`` for the totals row of a currency (contract fields empty)."""

    row_type: str
    period_start: str
    period_end: str
    contract_id: str
    contract_version: int | None
    contract_title: str
    model_version: int | None
    payer_org_id: str
    party_org_id: str
    party_name: str
    role: str
    events: int
    predictions: int
    unit_price: str
    currency: str
    gross_amount: str
    share_basis: str
    share_pct: str
    amount: str

    def as_dict(self) -> dict[str, str | int | None]:
        """The row keyed by column name, in column order."""
        return {name: getattr(self, name) for name in COLUMNS}


COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RevenueRow))
"""Report columns in export order."""


def format_minor(units: int, currency: str) -> str:
    """``units`` minor units written with exactly the currency's decimals ("12.30", JPY "1230")."""
    places = minor_unit_exponent(currency)
    sign, digits = ("-", str(-units)) if units < 0 else ("", str(units))
    if places == 0:
        return sign + digits
    digits = digits.rjust(places + 1, "0")
    return f"{sign}{digits[:-places]}.{digits[-places:]}"


def _percent(value: Decimal) -> str:
    return plain_decimal_string(value.normalize()) if value else "0"


def _utc(ts: datetime) -> str:
    if ts.tzinfo is None:
        raise ReportError(f"period bound {ts.isoformat()} has no time zone")
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _payee(contract: Contract, name: str) -> tuple[str, str]:
    """(org id, role) of a payee: a party's role, or ``owner`` for an owner taking no data part."""
    for p in contract.parties:
        if p.name == name:
            return p.org, p.role
    if contract.owner.name == name:
        return contract.owner.org, "owner"
    raise ReportError(f"{name!r} is neither a party nor the owner of {contract.title!r}")


def revenue_rows(
    start: datetime,
    end: datetime,
    usage: Iterable[UsageTotal],
    contracts: Iterable[ContractRef],
) -> list[RevenueRow]:
    """Report rows for ``[start, end)``, sorted by contract, contract version, model version,
    payer.

    Within a group, payees follow the contract (parties in order, then the owner).
    """
    if start >= end:
        raise ReportError("period start must be before its end")
    docs = {(c.contract_id, c.version): c.contract for c in contracts}
    seen: set[tuple[str, int, int, str]] = set()
    rows: list[RevenueRow] = []
    ordered = sorted(
        usage, key=lambda u: (u.contract_id, u.contract_version, u.model_version, u.payer_org_id)
    )
    for u in ordered:
        key = (u.contract_id, u.contract_version, u.model_version, u.payer_org_id)
        if key in seen:
            raise ReportError(f"usage for {key} given twice; sum it first")
        seen.add(key)
        contract = docs.get((u.contract_id, u.contract_version))
        if contract is None:
            raise ReportError(f"unknown contract {u.contract_id!r} version {u.contract_version}")
        rows.extend(_group_rows(_utc(start), _utc(end), u, contract))
    return rows


def _group_rows(start: str, end: str, u: UsageTotal, contract: Contract) -> list[RevenueRow]:
    commercial = contract.commercial
    price = commercial.price_per_prediction
    currency = price.currency
    try:
        gross = gross_minor(u.predictions, price)
        shares = shares_for(commercial, u.contributions)
        amounts = allocate(gross, shares)
    except ValueError as exc:
        raise ReportError(f"contract {u.contract_id!r}: {exc}") from exc
    rs = commercial.revenue_share
    basis = "fixed" if isinstance(rs, FixedShares) else f"contribution:{rs.measure}"
    order = {name: i for i, name in enumerate(contract.payees)}
    payees = sorted(shares, key=lambda n: (order.get(n, len(order)), n))
    rows = []
    for name in payees:
        org, role = _payee(contract, name)
        rows.append(
            RevenueRow(
                row_type=LINE,
                period_start=start,
                period_end=end,
                contract_id=u.contract_id,
                contract_version=u.contract_version,
                contract_title=contract.title,
                model_version=u.model_version,
                payer_org_id=u.payer_org_id,
                party_org_id=org,
                party_name=name,
                role=role,
                events=u.events,
                predictions=u.predictions,
                unit_price=format_minor(price.minor_units, currency),
                currency=currency,
                gross_amount=format_minor(gross, currency),
                share_basis=basis,
                share_pct=_percent(shares[name]),
                amount=format_minor(amounts[name], currency),
            )
        )
    return rows


def _minor(amount: str, currency: str) -> int:
    return int(Decimal(amount).scaleb(minor_unit_exponent(currency)))


def with_totals(rows: Sequence[RevenueRow]) -> list[RevenueRow]:
    """``rows`` followed by one ``total`` row per currency: events, predictions and gross
    summed over the (contract, contract version, model version, payer) groups shown, the
    amounts over the rows shown. No rows, no totals."""
    lines = [r for r in rows if r.row_type == LINE]
    groups: dict[tuple[object, ...], RevenueRow] = {}
    amounts: dict[str, int] = {}
    for r in lines:
        key = (r.contract_id, r.contract_version, r.model_version, r.payer_org_id)
        groups.setdefault(key, r)
        amounts[r.currency] = amounts.get(r.currency, 0) + _minor(r.amount, r.currency)
    totals = []
    for currency in sorted(amounts):
        mine = [g for g in groups.values() if g.currency == currency]
        gross = sum(_minor(g.gross_amount, currency) for g in mine)
        totals.append(
            RevenueRow(
                row_type=TOTAL,
                period_start=lines[0].period_start,
                period_end=lines[0].period_end,
                contract_id="",
                contract_version=None,
                contract_title="",
                model_version=None,
                payer_org_id="",
                party_org_id="",
                party_name="",
                role="",
                events=sum(g.events for g in mine),
                predictions=sum(g.predictions for g in mine),
                unit_price="",
                currency=currency,
                gross_amount=format_minor(gross, currency),
                share_basis="",
                share_pct="",
                amount=format_minor(amounts[currency], currency),
            )
        )
    return [*lines, *totals]


def party_totals(rows: Iterable[RevenueRow]) -> dict[tuple[str, str, str], str]:
    """Sum of ``amount`` per (party org id, party name, currency), as decimal strings (total
    rows are skipped)."""
    totals: dict[tuple[str, str, str], int] = {}
    for r in rows:
        if r.row_type != LINE:
            continue
        units = int(Decimal(r.amount).scaleb(minor_unit_exponent(r.currency)))
        key = (r.party_org_id, r.party_name, r.currency)
        totals[key] = totals.get(key, 0) + units
    return {k: format_minor(v, k[2]) for k, v in sorted(totals.items())}


def to_csv(rows: Iterable[RevenueRow]) -> str:
    """The rows as CSV (RFC 4180, CRLF line ends) with a header of :data:`COLUMNS`."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow(["" if getattr(r, n) is None else getattr(r, n) for n in COLUMNS])
    return out.getvalue()


def to_json(rows: Iterable[RevenueRow]) -> str:
    """The rows as a JSON array of objects; money and percentages are strings, never numbers."""
    return json.dumps([r.as_dict() for r in rows], indent=2, ensure_ascii=False) + "\n"


__all__ = [
    "COLUMNS",
    "LINE",
    "TOTAL",
    "ContractRef",
    "ReportError",
    "RevenueRow",
    "UsageTotal",
    "format_minor",
    "party_totals",
    "revenue_rows",
    "to_csv",
    "to_json",
    "with_totals",
]

"""Revenue report rows: one per contract x model version x payee, money as decimal strings.

Inputs are usage totals already summed per (contract, contract version, model version) over a
period, and the contract documents they refer to. Gross is predictions x unit price in integer
minor units; the payees' amounts are allocated from it by largest remainder, so each group's
amounts sum exactly to its gross. A usage total of zero predictions gives rows with zero amounts;
a group with no usage total gives no rows.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping
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


@dataclass(frozen=True)
class RevenueRow:
    """One line of the revenue report. Money and percentages are exact decimal strings."""

    period_start: str
    period_end: str
    contract_id: str
    contract_version: int
    contract_title: str
    model_version: int
    party_org_id: str
    party_name: str
    role: str
    predictions: int
    unit_price: str
    currency: str
    gross_amount: str
    share_basis: str
    share_pct: str
    amount: str

    def as_dict(self) -> dict[str, str | int]:
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
    """Report rows for ``[start, end)``, sorted by contract, contract version, model version.

    Within a group, payees follow the contract (parties in order, then the owner).
    """
    if start >= end:
        raise ReportError("period start must be before its end")
    docs = {(c.contract_id, c.version): c.contract for c in contracts}
    seen: set[tuple[str, int, int]] = set()
    rows: list[RevenueRow] = []
    ordered = sorted(usage, key=lambda u: (u.contract_id, u.contract_version, u.model_version))
    for u in ordered:
        key = (u.contract_id, u.contract_version, u.model_version)
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
                period_start=start,
                period_end=end,
                contract_id=u.contract_id,
                contract_version=u.contract_version,
                contract_title=contract.title,
                model_version=u.model_version,
                party_org_id=org,
                party_name=name,
                role=role,
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


def party_totals(rows: Iterable[RevenueRow]) -> dict[tuple[str, str, str], str]:
    """Sum of ``amount`` per (party org id, party name, currency), as decimal strings."""
    totals: dict[tuple[str, str, str], int] = {}
    for r in rows:
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
        writer.writerow([getattr(r, name) for name in COLUMNS])
    return out.getvalue()


def to_json(rows: Iterable[RevenueRow]) -> str:
    """The rows as a JSON array of objects; money and percentages are strings, never numbers."""
    return json.dumps([r.as_dict() for r in rows], indent=2, ensure_ascii=False) + "\n"


__all__ = [
    "COLUMNS",
    "ContractRef",
    "ReportError",
    "RevenueRow",
    "UsageTotal",
    "format_minor",
    "party_totals",
    "revenue_rows",
    "to_csv",
    "to_json",
]

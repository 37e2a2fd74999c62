"""Revenue accounting: exact allocation, half-open periods and finance report rows.

Pure functions over typed values: no HTTP, no database. Money stays in integer minor units or
:class:`decimal.Decimal` throughout and is written out as decimal strings, never floats.
"""

from services.finance.allocation import (
    AllocationError,
    allocate,
    contribution_shares,
    gross_minor,
    shares_for,
)
from services.finance.periods import PeriodError, explicit_period, in_period, parse_period
from services.finance.report import (
    COLUMNS,
    LINE,
    TOTAL,
    ContractRef,
    ReportError,
    RevenueRow,
    UsageTotal,
    format_minor,
    party_totals,
    revenue_rows,
    to_csv,
    to_json,
    with_totals,
)

__all__ = [
    "COLUMNS",
    "LINE",
    "TOTAL",
    "AllocationError",
    "ContractRef",
    "PeriodError",
    "ReportError",
    "RevenueRow",
    "UsageTotal",
    "allocate",
    "contribution_shares",
    "explicit_period",
    "format_minor",
    "gross_minor",
    "in_period",
    "parse_period",
    "party_totals",
    "revenue_rows",
    "shares_for",
    "to_csv",
    "to_json",
    "with_totals",
]

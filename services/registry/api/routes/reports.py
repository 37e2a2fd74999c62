"""Finance reports: revenue per contract, model version and party over a period."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Depends, Query, Response

from services.finance import PeriodError, explicit_period, parse_period
from services.protocol.errors import ErrorCode, SpliceError
from services.registry.api.deps import CallerDep, SessionDep
from services.registry.api.revenue_formats import MEDIA_TYPES, Format, render
from services.registry.store import reports

router = APIRouter(tags=["reports"])


class InvalidPeriod(SpliceError):
    """The requested period cannot be used (malformed, unknown time zone, ``from >= to``)."""

    status = 422
    code = ErrorCode.VALIDATION


def _invalid(field: str, message: str) -> InvalidPeriod:
    detail = [{"loc": ["query", field], "msg": message, "type": "period_invalid"}]
    return InvalidPeriod(message, detail=detail)


def resolve_period(
    start: str | None, end: str | None, period: str | None, tz: str | None
) -> tuple[datetime, datetime]:
    """The half-open UTC bounds the query asks for, or :class:`InvalidPeriod` naming the field."""
    if tz is not None and tz != "UTC":
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise _invalid(
                "tz", f"unknown time zone {tz!r}; use an IANA name such as 'Europe/Berlin'"
            ) from None
    if period is not None:
        if start is not None or end is not None:
            raise _invalid("period", "give either period or from and to, not both")
        try:
            return parse_period(period, tz)
        except PeriodError as exc:
            raise _invalid("period", str(exc)) from None
    if start is None or end is None:
        raise _invalid("from" if start is None else "to", "give period, or both from and to")
    try:
        return explicit_period(start, end, tz)
    except PeriodError as exc:
        raise _invalid("to" if str(exc).startswith("to ") else "from", str(exc)) from None


def stamp(moment: datetime) -> str:
    """A period bound in a file name (``20261101T000000Z``)."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass(frozen=True)
class Period:
    """The period query parameters of a report, as given."""

    start: str | None
    end: str | None
    period: str | None
    tz: str | None


def _period(
    start: Annotated[
        str | None,
        Query(
            alias="from",
            max_length=64,
            description="Start (inclusive): an ISO 8601 date or datetime; without an offset it "
            "is wall-clock time in `tz`.",
        ),
    ] = None,
    end: Annotated[
        str | None, Query(alias="to", max_length=64, description="End (exclusive), as `from`.")
    ] = None,
    period: Annotated[
        str | None,
        Query(
            max_length=64,
            description="Instead of from and to: a month `YYYY-MM` (local midnights in `tz`), "
            "or `FROM/TO`.",
        ),
    ] = None,
    tz: Annotated[
        str | None,
        Query(max_length=64, description="IANA time zone of the bounds (default UTC)."),
    ] = None,
) -> Period:
    return Period(start, end, period, tz)


PeriodQuery = Annotated[Period, Depends(_period)]
"""``from``, ``to``, ``period`` and ``tz`` of a report's query (resolved by
:func:`resolve_period`)."""


@router.get(
    "/v1/reports/revenue",
    response_class=Response,
    responses={
        200: {
            "description": "The report as a file (Content-Disposition: attachment).",
            "content": {media: {} for media in MEDIA_TYPES.values()},
        }
    },
)
def revenue_report(
    session: SessionDep,
    caller: CallerDep,
    when: PeriodQuery,
    fmt: Annotated[Format, Query(alias="format", description="File format.")] = "csv",
) -> Response:
    """Revenue over the half-open period ``[from, to)`` (scope ``reports:read``): one row per
    contract x model version x payer x payee with the payer's events and predictions, unit
    price, gross and each payee's share and amount, money as exact decimal strings in the
    contract's currency (amounts of a group sum to its gross to the minor unit; numeric cells
    in the workbook), then a ``total`` row per currency.

    Operators and organisations granted ``reports:all-contracts`` see every row; a contract's
    owner, and a finance organisation party to it, every row of the contract; a party only its
    own organisation's rows (``party_org_id``). Bounds in the file are UTC. A bad period
    (malformed, unknown time zone, ``from >= to``) is a 422 naming the query field; a
    contribution-sharing contract whose model version has no
    contributions stored is a 409.
    """
    lo, hi = resolve_period(when.start, when.end, when.period, when.tz)
    rows = reports.revenue(session, caller, lo, hi)
    rendered = render(rows, fmt)
    name = f"revenue_{stamp(lo)}_{stamp(hi)}.{rendered.extension}"
    return Response(
        content=rendered.content,
        media_type=rendered.media_type,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )

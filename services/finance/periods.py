"""Half-open reporting periods ``[start, end)`` as aware UTC datetimes.

A month ``"2026-11"`` runs from midnight on the 1st to midnight on the 1st of the next month, in
UTC unless an IANA time zone is given; then the bounds are that zone's local midnights converted
to UTC, so a month with a daylight-saving change is an hour shorter or longer. An event at exactly
``end`` belongs to the next period.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


class PeriodError(ValueError):
    """A period that cannot be used: malformed, unknown time zone, or ``start >= end``."""

    code = "period_invalid"


def _zone(tz: str | None) -> tzinfo:
    if tz is None or tz == "UTC":
        return UTC
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise PeriodError(
            f"unknown time zone {tz!r}; use an IANA name such as 'Europe/Berlin'"
        ) from None


def _aware(value: datetime | str, zone: tzinfo, what: str) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise PeriodError(f"{what} {value!r} is not an ISO 8601 date or datetime") from None
    if value.tzinfo is None:
        # Naive: wall-clock time in the requested zone (fold=0 for ambiguous times).
        value = value.replace(tzinfo=zone)
    return value.astimezone(UTC)


def explicit_period(
    start: datetime | str, end: datetime | str, tz: str | None = None
) -> tuple[datetime, datetime]:
    """``[start, end)`` in UTC; naive bounds are read as wall-clock times in ``tz`` (UTC default).

    Raises :class:`PeriodError` unless ``start < end``.
    """
    zone = _zone(tz)
    lo, hi = _aware(start, zone, "from"), _aware(end, zone, "to")
    if lo >= hi:
        raise PeriodError(
            f"period start {lo.isoformat()} must be before its end {hi.isoformat()} "
            "(periods are half-open: [from, to))"
        )
    return lo, hi


def parse_period(period: str, tz: str | None = None) -> tuple[datetime, datetime]:
    """The half-open UTC bounds of ``period``.

    ``period`` is a month ``YYYY-MM`` (local midnights in ``tz``, UTC by default) or an explicit
    ISO 8601 interval ``FROM/TO`` (see :func:`explicit_period`).
    """
    if "/" in period:
        start, _, end = period.partition("/")
        return explicit_period(start, end, tz)
    m = _MONTH.fullmatch(period)
    if m is None:
        raise PeriodError(f"period {period!r} is neither a month YYYY-MM nor FROM/TO")
    year, month = int(m[1]), int(m[2])
    if not 1 <= month <= 12 or year < 1:
        raise PeriodError(f"period {period!r} names no month")
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    if next_year > 9999:
        raise PeriodError(f"period {period!r} is out of range")
    zone = _zone(tz)
    return explicit_period(
        datetime(year, month, 1, tzinfo=zone), datetime(next_year, next_month, 1, tzinfo=zone)
    )


def in_period(ts: datetime, start: datetime, end: datetime) -> bool:
    """Whether ``start <= ts < end``; all three must be time-zone aware."""
    for name, value in (("timestamp", ts), ("start", start), ("end", end)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise PeriodError(f"{name} {value.isoformat()} has no time zone")
    return start <= ts < end


__all__ = ["PeriodError", "explicit_period", "in_period", "parse_period"]

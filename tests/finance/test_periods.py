"""Half-open periods: month ends, leap day, December rollover, DST in a requested time zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.finance import PeriodError, explicit_period, in_period, parse_period


def utc(y: int, m: int, d: int, h: int = 0, mi: int = 0, s: int = 0, us: int = 0) -> datetime:
    return datetime(y, m, d, h, mi, s, us, tzinfo=UTC)


@pytest.mark.parametrize(
    ("period", "start", "end", "days"),
    [
        ("2026-11", utc(2026, 11, 1), utc(2026, 12, 1), 30),
        ("2026-01", utc(2026, 1, 1), utc(2026, 2, 1), 31),
        ("2026-02", utc(2026, 2, 1), utc(2026, 3, 1), 28),
        ("2028-02", utc(2028, 2, 1), utc(2028, 3, 1), 29),
        ("2026-12", utc(2026, 12, 1), utc(2027, 1, 1), 31),
    ],
)
def test_months_in_utc(period: str, start: datetime, end: datetime, days: int) -> None:
    lo, hi = parse_period(period)
    assert (lo, hi) == (start, end)
    assert lo.tzinfo is UTC and hi.tzinfo is UTC
    assert hi - lo == timedelta(days=days)


def test_month_end_boundaries_are_half_open() -> None:
    feb = parse_period("2028-02")
    mar = parse_period("2028-03")
    leap_day = utc(2028, 2, 29, 23, 59, 59, 999999)
    assert in_period(utc(2028, 2, 29), *feb)
    assert in_period(leap_day, *feb) and not in_period(leap_day, *mar)
    assert not in_period(utc(2028, 3, 1), *feb) and in_period(utc(2028, 3, 1), *mar)
    assert in_period(utc(2028, 2, 1), *feb)
    assert not in_period(utc(2028, 1, 31, 23, 59, 59), *feb)


def test_december_rolls_over_to_january() -> None:
    dec = parse_period("2026-12")
    jan = parse_period("2027-01")
    assert dec[1] == jan[0] == utc(2027, 1, 1)
    assert in_period(utc(2026, 12, 31, 23, 59), *dec)
    assert in_period(utc(2027, 1, 1), *jan) and not in_period(utc(2027, 1, 1), *dec)


@pytest.mark.parametrize(
    ("period", "hours", "start", "end"),
    [
        ("2026-03", 743, utc(2026, 2, 28, 23), utc(2026, 3, 31, 22)),  # CET -> CEST on 29 March
        ("2026-10", 745, utc(2026, 9, 30, 22), utc(2026, 10, 31, 23)),  # CEST -> CET on 25 Oct
        ("2026-07", 744, utc(2026, 6, 30, 22), utc(2026, 7, 31, 22)),
    ],
)
def test_dst_months_in_berlin(period: str, hours: int, start: datetime, end: datetime) -> None:
    lo, hi = parse_period(period, "Europe/Berlin")
    assert (lo, hi) == (start, end)
    assert hi - lo == timedelta(hours=hours)
    berlin = ZoneInfo("Europe/Berlin")
    assert lo.astimezone(berlin).hour == 0 and hi.astimezone(berlin).hour == 0


def test_time_zone_moves_events_between_months() -> None:
    # 23:30 UTC on 31 October is already 1 November in Berlin (CET, +01:00).
    ts = utc(2026, 10, 31, 23, 30)
    assert in_period(ts, *parse_period("2026-10"))
    assert in_period(ts, *parse_period("2026-11", "Europe/Berlin"))
    assert not in_period(ts, *parse_period("2026-10", "Europe/Berlin"))
    tokyo = parse_period("2026-12", "Asia/Tokyo")
    assert tokyo == (utc(2026, 11, 30, 15), utc(2026, 12, 31, 15))


def test_explicit_periods() -> None:
    assert explicit_period(utc(2026, 1, 1), utc(2026, 1, 2)) == (utc(2026, 1, 1), utc(2026, 1, 2))
    assert explicit_period("2026-01-01T00:00:00Z", "2026-01-01T06:00:00+02:00") == (
        utc(2026, 1, 1),
        utc(2026, 1, 1, 4),
    )
    # Naive bounds are wall-clock times in the requested zone (UTC by default).
    assert explicit_period("2026-03-29", "2026-03-30", "Europe/Berlin") == (
        utc(2026, 3, 28, 23),
        utc(2026, 3, 29, 22),
    )
    assert explicit_period(datetime(2026, 1, 1), datetime(2026, 2, 1)) == parse_period("2026-01")
    assert parse_period("2026-01-01T00:00:00Z/2026-02-01T00:00:00Z") == parse_period("2026-01")


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: explicit_period(utc(2026, 1, 2), utc(2026, 1, 1)), "before its end"),
        (lambda: explicit_period(utc(2026, 1, 1), utc(2026, 1, 1)), "before its end"),
        (lambda: parse_period("2026-02-01/2026-01-01"), "before its end"),
        (lambda: parse_period("2026-13"), "names no month"),
        (lambda: parse_period("2026-00"), "names no month"),
        (lambda: parse_period("2026-1"), "neither a month"),
        (lambda: parse_period("november"), "neither a month"),
        (lambda: parse_period("9999-12"), "out of range"),
        (lambda: parse_period("2026-11", "Mars/Olympus"), "unknown time zone"),
        (lambda: parse_period("2026-11/soon"), "not an ISO 8601"),
        (lambda: in_period(datetime(2026, 1, 1), utc(2026, 1, 1), utc(2026, 2, 1)), "time zone"),
    ],
)
def test_bad_periods_raise_period_error(call: object, match: str) -> None:
    with pytest.raises(PeriodError, match=match) as info:
        call()  # type: ignore[operator]
    assert isinstance(info.value, ValueError)
    assert info.value.code == "period_invalid"

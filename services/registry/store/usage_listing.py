"""The usage events a buyer is billed for: paged, filtered, priced as the revenue report prices.

Who sees which events: a payer its own (``caller_org_id``, the verified caller of each
prediction); a contract's owner and parties every event of that contract; operators and
``reports:all-contracts`` every event. Events are ordered by time, then id, and paged by an
opaque cursor (the last event's time and id), so a page never repeats or skips an event while
new ones arrive. Each event's ``amount`` is its count times its contract version's unit price,
in integer minor units; the totals of a listing are computed the same way, so they equal the
revenue report's gross for the same payer and period to the cent.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import Session

from services.finance import format_minor
from services.protocol.errors import Unprocessable
from services.registry.auth import Caller
from services.registry.models_usage import UsageEvent
from services.registry.store.reports import (
    REPORTS_READ,
    contract_documents,
    sees_everything,
    visible_contracts,
)

MAX_EXPORT = 100_000
"""Most events one export may hold: narrow the period or filter for more."""


@dataclass(frozen=True)
class EventFilter:
    """What to list: the half-open period and optional contract, model version and payer."""

    start: datetime
    end: datetime
    contract_id: str | None = None
    model_version: int | None = None
    payer_org_id: str | None = None


@dataclass(frozen=True)
class BilledEvent:
    """One usage event with its price."""

    event_id: str
    occurred_at: datetime
    contract_id: str
    contract_version: int
    model_version: int
    payer_org_id: str
    predictions: int
    unit_price: str
    currency: str
    amount: str


@dataclass(frozen=True)
class ListingTotal:
    """Events, predictions and amount of a listing in one currency."""

    currency: str
    events: int
    predictions: int
    amount: str


def _visible(session: Session, caller: Caller, f: EventFilter) -> Select[UsageEvent]:
    stmt = select(UsageEvent).where(
        UsageEvent.occurred_at >= f.start, UsageEvent.occurred_at < f.end
    )
    if not sees_everything(session, caller):
        assert caller.org_id is not None
        members = visible_contracts(session, caller.org_id)[0]
        stmt = stmt.where(
            or_(UsageEvent.caller_org_id == caller.org_id, UsageEvent.contract_id.in_(members))
        )
    if f.contract_id is not None:
        stmt = stmt.where(UsageEvent.contract_id == f.contract_id)
    if f.model_version is not None:
        stmt = stmt.where(UsageEvent.model_version == f.model_version)
    if f.payer_org_id is not None:
        stmt = stmt.where(UsageEvent.caller_org_id == f.payer_org_id)
    return stmt


def encode_cursor(event: BilledEvent) -> str:
    """The cursor after ``event``."""
    raw = f"{event.occurred_at.isoformat()}|{event.event_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        at, _, event_id = raw.partition("|")
        moment = datetime.fromisoformat(at)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise _bad_cursor() from exc
    if moment.tzinfo is None or not event_id:
        raise _bad_cursor()
    return moment, event_id


def _bad_cursor() -> Unprocessable:
    detail = [{"loc": ["query", "after"], "msg": "not a cursor of this listing", "type": "cursor"}]
    return Unprocessable("the cursor is malformed", detail=detail)


def list_events(
    session: Session, caller: Caller, f: EventFilter, *, after: str | None, limit: int
) -> tuple[list[BilledEvent], str | None]:
    """One page of events (scope ``reports:read``) and the cursor of the next (None: last)."""
    caller.require_scope(REPORTS_READ)
    stmt = _visible(session, caller, f)
    if after is not None:
        at, event_id = _decode_cursor(after)
        stmt = stmt.where(
            or_(
                UsageEvent.occurred_at > at,
                and_(UsageEvent.occurred_at == at, UsageEvent.event_id > event_id),
            )
        )
    stmt = stmt.order_by(UsageEvent.occurred_at, UsageEvent.event_id).limit(limit + 1)
    found = list(session.scalars(stmt))
    page = _priced(session, found[:limit])
    return page, encode_cursor(page[-1]) if len(found) > limit else None


def export_events(session: Session, caller: Caller, f: EventFilter) -> list[BilledEvent]:
    """Every event of the listing (at most :data:`MAX_EXPORT`, 422 beyond)."""
    caller.require_scope(REPORTS_READ)
    stmt = _visible(session, caller, f)
    count = session.scalar(select(func.count()).select_from(stmt.subquery()))
    if count is not None and count > MAX_EXPORT:
        raise Unprocessable(
            f"{count} events match: an export holds at most {MAX_EXPORT}; narrow the period "
            "or filter by contract, model version or payer",
            detail={"events": count, "limit": MAX_EXPORT},
        )
    stmt = stmt.order_by(UsageEvent.occurred_at, UsageEvent.event_id)
    return _priced(session, list(session.scalars(stmt)))


def totals(session: Session, caller: Caller, f: EventFilter) -> list[ListingTotal]:
    """Events, predictions and amount of the whole listing per currency (not only a page)."""
    caller.require_scope(REPORTS_READ)
    sub = _visible(session, caller, f).subquery()
    grouped = session.execute(
        select(
            sub.c.contract_id, sub.c.contract_version, func.count(), func.sum(sub.c.count)
        ).group_by(sub.c.contract_id, sub.c.contract_version)
    ).all()
    prices = _prices(session, {(c, v) for c, v, _, _ in grouped})
    sums: dict[str, list[int]] = {}
    for c, v, n, total in grouped:
        minor, currency = prices[(c, v)]
        entry = sums.setdefault(currency, [0, 0, 0])
        entry[0] += int(n)
        entry[1] += int(total)
        entry[2] += int(total) * minor
    return [
        ListingTotal(cur, n, p, format_minor(amount, cur))
        for cur, (n, p, amount) in sorted(sums.items())
    ]


def _prices(
    session: Session, versions: set[tuple[str, int]]
) -> dict[tuple[str, int], tuple[int, str]]:
    """(unit price in minor units, currency) of each contract version."""
    if not versions:
        return {}
    refs, _ = contract_documents(session, versions)
    out = {}
    for key, ref in refs.items():
        price = ref.contract.commercial.price_per_prediction
        out[key] = (price.minor_units, price.currency)
    return out


def _priced(session: Session, events: list[UsageEvent]) -> list[BilledEvent]:
    prices = _prices(session, {(e.contract_id, e.contract_version) for e in events})
    out = []
    for e in events:
        minor, currency = prices[(e.contract_id, e.contract_version)]
        out.append(
            BilledEvent(
                event_id=e.event_id,
                occurred_at=e.occurred_at,
                contract_id=e.contract_id,
                contract_version=e.contract_version,
                model_version=e.model_version,
                payer_org_id=e.caller_org_id,
                predictions=e.count,
                unit_price=format_minor(minor, currency),
                currency=currency,
                amount=format_minor(e.count * minor, currency),
            )
        )
    return out

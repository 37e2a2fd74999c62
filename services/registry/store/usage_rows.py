"""The statements of usage ingestion, one per batch whatever its size, on both backends.

PostgreSQL gets whole columns as array parameters (``unnest`` for the insert, ``= ANY`` for the
look-up): a statement of a thousand rows is as short as one of a single row, so neither the
driver nor the server parses thousands of placeholders. SQLite gets ``executemany`` and
``IN``. Both insert with ``ON CONFLICT (event_id) DO NOTHING ... RETURNING event_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Integer,
    String,
    and_,
    any_,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.types import TypeEngine

from services.registry.models_usage import UsageCounter, UsageEvent

CounterKey = tuple[str, datetime]
"""(contract id, cap period start)."""
COMPARED = (
    "contract_id",
    "contract_version",
    "model_version",
    "caller_org_id",
    "count",
    "occurred_at",
)
"""The fields of an event (besides its id) that a duplicate must repeat exactly."""
_COLUMNS: dict[str, TypeEngine[Any]] = {
    "event_id": String(),
    "contract_id": String(),
    "contract_version": Integer(),
    "model_version": Integer(),
    "caller_org_id": String(),
    "count": BigInteger(),
    "occurred_at": DateTime(timezone=True),
    "caller_client_id": String(),
    "caller_jti": String(),
}


def _postgresql(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def _insert(session: Session, entity: Any) -> postgresql.Insert | sqlite.Insert:
    return postgresql.insert(entity) if _postgresql(session) else sqlite.insert(entity)


def stored_events(session: Session, event_ids: list[str]) -> list[dict[str, Any]]:
    """The stored events among ``event_ids`` (one statement), as dicts of id and
    :data:`COMPARED` fields."""
    if not event_ids:
        return []
    columns = [getattr(UsageEvent, name) for name in ("event_id", *COMPARED)]
    if _postgresql(session):
        ids = bindparam("ids", event_ids, type_=ARRAY(String()))
        where = UsageEvent.event_id == any_(ids)
    else:
        where = UsageEvent.event_id.in_(event_ids)
    return [dict(row._mapping) for row in session.execute(select(*columns).where(where))]


def insert_events(
    session: Session, rows: Sequence[dict[str, Any]], reported_by: str, now: datetime
) -> set[str]:
    """Insert ``rows`` (dicts of the id and :data:`COMPARED` fields) in event id order, so
    concurrent batches never wait on each other in a cycle, skipping ids already stored: the
    ids this statement stored."""
    if not rows:
        return set()
    ordered = [
        {"caller_client_id": None, "caller_jti": None, **r}
        for r in sorted(rows, key=lambda r: str(r["event_id"]))
    ]
    if not _postgresql(session):
        params = [{**r, "received_at": now, "reported_by": reported_by} for r in ordered]
        stmt = sqlite.insert(UsageEvent).on_conflict_do_nothing(index_elements=["event_id"])
        return set(session.scalars(stmt.returning(UsageEvent.event_id), params))
    arrays: list[BindParameter[Any]] = [
        bindparam(name, [r[name] for r in ordered], type_=ARRAY(kind))
        for name, kind in _COLUMNS.items()
    ]
    table = func.unnest(*arrays).table_valued(*_COLUMNS).render_derived()
    source = select(
        *(table.c[name] for name in _COLUMNS),
        bindparam("received_at", now, type_=DateTime(timezone=True)),
        bindparam("reported_by", reported_by, type_=String()),
    )
    insert = (
        postgresql.insert(UsageEvent)
        .from_select([*_COLUMNS, "received_at", "reported_by"], source)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(UsageEvent.event_id)
    )
    return set(session.scalars(insert))


def lock_counters(session: Session, periods: dict[CounterKey, datetime]) -> dict[CounterKey, int]:
    """Lock the counters of ``periods`` (start -> end), created if missing, in key order; what
    each holds. A counter created here starts from the events already stored in its period
    (counted while the contract had no cap, or under another version's).

    Creation inserts every key in order and waits for concurrent creators; locking then takes
    ``FOR UPDATE`` in the same order: concurrent batches queue, they cannot deadlock."""
    if not periods:
        return {}
    keys = sorted(periods)
    rows = [{"contract_id": c, "period_start": s, "used": 0} for c, s in keys]
    create = _insert(session, UsageCounter).values(rows).on_conflict_do_nothing()
    created = session.execute(create.returning(UsageCounter.contract_id, UsageCounter.period_start))
    new = {(c, s) for c, s in created}
    which = or_(
        *(and_(UsageCounter.contract_id == c, UsageCounter.period_start == s) for c, s in keys)
    )
    locked = session.execute(
        select(UsageCounter.contract_id, UsageCounter.period_start, UsageCounter.used)
        .where(which)
        .order_by(UsageCounter.contract_id, UsageCounter.period_start)
        .with_for_update()
    )
    used = {(c, s): n for c, s, n in locked}
    for c, s in sorted(new):
        before = session.scalar(
            select(func.coalesce(func.sum(UsageEvent.count), 0)).where(
                UsageEvent.contract_id == c,
                UsageEvent.occurred_at >= s,
                UsageEvent.occurred_at < periods[(c, s)],
            )
        )
        used[(c, s)] = int(before or 0)
        if used[(c, s)]:
            write_counters(session, {(c, s): used[(c, s)]})
    return used


def write_counters(session: Session, values: dict[CounterKey, int]) -> None:
    """Set counters (locked by :func:`lock_counters`) to ``values``."""
    for (c, s), value in sorted(values.items()):
        session.execute(
            update(UsageCounter)
            .where(UsageCounter.contract_id == c, UsageCounter.period_start == s)
            .values(used=value)
        )

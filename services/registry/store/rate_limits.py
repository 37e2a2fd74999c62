"""Rate-limit counters in the registry database, shared by every worker and instance.

One statement per check: an upsert of every bucket the request counts against, each row reset
when its window has passed and incremented otherwise, ``RETURNING`` the new counts. PostgreSQL
and SQLite (3.35+) both do ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING`` atomically, so two
workers hitting the same bucket at once each see a distinct count.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import case
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from services.registry.models_usage import RateCounter
from services.web.ratelimit import refuse, window_start


def count_hits(
    session: Session, buckets: list[str], window_seconds: int, now: float
) -> dict[str, int]:
    """Count one request against each of ``buckets`` in the window of ``now`` and commit (so
    the count stays whatever becomes of the request: call this before the request writes
    anything); the counts so far in this window, by bucket."""
    start = window_start(now, window_seconds)
    # One lock order for every statement (sorted), so concurrent multi-bucket upserts on
    # PostgreSQL cannot deadlock.
    rows = [{"bucket": b, "window_start": start, "n": 1} for b in sorted(set(buckets))]
    dialect = session.get_bind().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(RateCounter).values(rows)
    same_window = RateCounter.window_start == stmt.excluded.window_start
    stmt = stmt.on_conflict_do_update(
        index_elements=["bucket"],
        set_={
            "n": case((same_window, RateCounter.n + 1), else_=1),
            "window_start": stmt.excluded.window_start,
        },
    ).returning(RateCounter.bucket, RateCounter.n)
    counts = {str(bucket): int(n) for bucket, n in session.execute(stmt)}
    session.commit()
    return counts


def check(
    session: Session, limits: dict[str, int], window_seconds: int, *, now: float | None = None
) -> None:
    """Count a request against each bucket of ``limits`` (bucket -> allowed per window) and
    raise :class:`~services.protocol.errors.RateLimited` if any is over its limit."""
    if not limits:
        return
    at = time.time() if now is None else now
    counts = count_hits(session, list(limits), window_seconds, at)
    for bucket, limit in limits.items():
        if counts.get(bucket, 0) > limit:
            raise refuse(bucket.split(":", 1)[0], limit, at, window_seconds)

"""A durable local outbox of metering records (SQLite, one file per kind and party).

The label party's usage events are written before a prediction is answered, a feature party's
serving observations when it served its part; both are removed only after the registry
acknowledged them, so nothing is lost when the registry is down or the process dies. The
record's id is the primary key, so appending the same record twice stores it once (and the
registry deduplicates on it too). SQLite in WAL mode with one writer lock makes appends from
several threads safe.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import BaseModel

from services.party.sqlite import open_store
from services.protocol.messages import ServingObservation, UsageEvent

T = TypeVar("T", bound=BaseModel)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS refused (
    event_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    code TEXT NOT NULL,
    message TEXT NOT NULL,
    refused_at TEXT NOT NULL
)""",
)


class Outbox(Generic[T]):
    """Append, peek in order, acknowledge; records of type ``model`` keyed by ``key``."""

    def __init__(self, path: Path, model: type[T], key: Callable[[T], str]) -> None:
        self.model = model
        self.key = key
        self._db = open_store(path, _SCHEMA)
        self._lock = threading.Lock()
        with self._lock:
            self._depth = self._count("outbox")
            self._refused = self._count("refused")

    def _count(self, table: str) -> int:
        (count,) = self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
        return int(count)

    def append(self, events: Sequence[T]) -> int:
        """Store ``events`` durably, all or none; returns how many were new."""
        rows = ((self.key(e), e.model_dump_json()) for e in events)  # consumed in the transaction
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO outbox (event_id, body) VALUES (?, ?)", rows
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            added = self._db.total_changes - before
            self._depth += added
            return added

    def pending(self, limit: int = 500) -> list[T]:
        """The oldest events not yet acknowledged, in the order they were appended."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM outbox ORDER BY seq LIMIT ?", (max(limit, 0),)
            ).fetchall()
        return [self.model.model_validate_json(body) for (body,) in rows]

    def acknowledge(self, event_ids: Sequence[str]) -> None:
        """Forget events the registry has stored."""
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM outbox WHERE event_id = ?", [(i,) for i in event_ids])
            self._db.execute("COMMIT")
            self._depth -= self._db.total_changes - before

    def refuse(self, refusals: Sequence[tuple[str, str, str]], at: datetime) -> int:
        """Move events the registry will never count out of the queue into the ``refused`` table
        (``(event_id, code, message)`` each), so they are kept for inspection but not retried;
        returns how many were moved."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            moved = 0
            try:
                for event_id, code, message in refusals:
                    row = self._db.execute(
                        "SELECT body FROM outbox WHERE event_id = ?", (event_id,)
                    ).fetchone()
                    if row is None:
                        continue
                    self._db.execute(
                        "INSERT OR REPLACE INTO refused VALUES (?, ?, ?, ?, ?)",
                        (event_id, row[0], code, message, at.isoformat()),
                    )
                    self._db.execute("DELETE FROM outbox WHERE event_id = ?", (event_id,))
                    moved += 1
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._depth -= moved
            self._refused = self._count("refused")
            return moved

    def refused(self) -> list[tuple[T, str, str]]:
        """Events the registry refused, with its code and message, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body, code, message FROM refused ORDER BY refused_at, event_id"
            ).fetchall()
        return [(self.model.model_validate_json(b), c, m) for b, c, m in rows]

    def depth(self) -> int:
        """Events waiting to be shipped (counted in memory: asking costs no I/O)."""
        return self._depth

    def refused_count(self) -> int:
        """Events the registry refused (kept aside, never retried)."""
        return self._refused

    def oldest(self) -> datetime | None:
        """Timestamp of the oldest waiting record (how far behind shipping is)."""
        records = self.pending(1)
        at = getattr(records[0], "timestamp", None) if records else None
        return at if isinstance(at, datetime) else None

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()


class UsageOutbox(Outbox[UsageEvent]):
    """The label party's usage events, by event id."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, UsageEvent, _event_id)


class ObservationOutbox(Outbox[ServingObservation]):
    """A feature party's serving observations, by observation id."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, ServingObservation, _observation_id)


def _event_id(event: UsageEvent) -> str:
    return event.event_id


def _observation_id(observation: ServingObservation) -> str:
    return observation.observation_id

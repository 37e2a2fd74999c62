"""A durable local outbox of usage events (SQLite, one file per party).

Events are written before a prediction is answered and removed only after the registry
acknowledged them, so nothing is lost when the registry is down or the process dies; the event id
is the primary key, so appending the same event twice stores it once (and the registry
deduplicates on it too). SQLite in WAL mode with one writer lock makes appends from several
threads safe.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from services.protocol.messages import UsageEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
)
"""


class UsageOutbox:
    """Append, peek in order, acknowledge."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)

    def append(self, events: Sequence[UsageEvent]) -> int:
        """Store ``events`` durably, all or none; returns how many were new."""
        rows = ((e.event_id, e.model_dump_json()) for e in events)  # consumed in the transaction
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
            return self._db.total_changes - before

    def pending(self, limit: int = 500) -> list[UsageEvent]:
        """The oldest events not yet acknowledged, in the order they were appended."""
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM outbox ORDER BY seq LIMIT ?", (max(limit, 0),)
            ).fetchall()
        return [UsageEvent.model_validate_json(body) for (body,) in rows]

    def acknowledge(self, event_ids: Sequence[str]) -> None:
        """Forget events the registry has stored."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM outbox WHERE event_id = ?", [(i,) for i in event_ids])
            self._db.execute("COMMIT")

    def depth(self) -> int:
        """Events waiting to be shipped."""
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()
        return int(count)

    def oldest(self) -> datetime | None:
        """Timestamp of the oldest waiting event (how far behind shipping is)."""
        events = self.pending(1)
        return events[0].timestamp if events else None

    def close(self) -> None:
        """Close the database file."""
        with self._lock:
            self._db.close()

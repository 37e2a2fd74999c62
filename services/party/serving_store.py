"""What a feature party keeps of its serving rounds, durably: per job, how many keys the label
party asked (the count the contract's limit applies to) and the keys of the handles the rounds
added after the training's. One SQLite file in the party's data directory, so a restarted party
answers the same handles and keeps counting. WAL with ``synchronous=NORMAL``: a commit survives
the process being killed (the failure this guards against) without an fsync per round; an OS
crash may lose the last rounds, after which a handle the label party cached is refused (400
``unknown_handles``) until it asks that key again."""

from __future__ import annotations

import threading
from pathlib import Path

from services.party.sqlite import open_store

STORE_FILE = "serving-rounds.sqlite"
_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS asked (job_id TEXT PRIMARY KEY, keys INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS live_handles (job_id TEXT NOT NULL, handle INTEGER NOT NULL, "
    "key TEXT NOT NULL, PRIMARY KEY (job_id, handle)) WITHOUT ROWID",
]


class ServingStore:
    """Per-job round counts and live handles."""

    def __init__(self, path: Path) -> None:
        self._db = open_store(path, _SCHEMA)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def asked(self, job_id: str) -> int:
        """Keys asked in the job's rounds so far."""
        with self._lock:
            row = self._db.execute("SELECT keys FROM asked WHERE job_id=?", (job_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def ask(self, job_id: str, count: int) -> None:
        """Count ``count`` more keys asked (committed before the round is answered)."""
        with self._lock:
            self._db.execute(
                "INSERT INTO asked VALUES (?, ?) ON CONFLICT(job_id) DO UPDATE SET "
                "keys = keys + excluded.keys",
                (job_id, count),
            )

    def live_keys(self, job_id: str) -> list[str]:
        """Keys of the handles rounds added, in handle order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key FROM live_handles WHERE job_id=? ORDER BY handle", (job_id,)
            ).fetchall()
        return [str(r[0]) for r in rows]

    def add_live(self, job_id: str, first: int, keys: list[str]) -> None:
        """Record handles ``first, first+1, ...`` of ``keys`` (one transaction)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    "INSERT OR REPLACE INTO live_handles VALUES (?, ?, ?)",
                    ((job_id, first + i, k) for i, k in enumerate(keys)),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def forget(self, job_id: str) -> None:
        """Drop a job's rows (a fresh preparation of that id starts clean)."""
        with self._lock:
            self._db.execute("DELETE FROM asked WHERE job_id=?", (job_id,))
            self._db.execute("DELETE FROM live_handles WHERE job_id=?", (job_id,))


__all__ = ["STORE_FILE", "ServingStore"]

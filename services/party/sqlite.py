"""The party's small local SQLite stores (usage outbox, key allowances): one way to open them."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path


def open_store(path: Path, schema: Iterable[str]) -> sqlite3.Connection:
    """A durable store at ``path``: autocommit (explicit transactions), WAL, fsync on commit,
    shareable between threads (callers serialise with their own lock), ``schema`` applied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    for statement in schema:
        db.execute(statement)
    return db

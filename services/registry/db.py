"""Engines and sessions for the registry database (SQLite file or PostgreSQL).

SQLite gets foreign keys on, a busy timeout and ``BEGIN IMMEDIATE`` transactions: a transaction
takes the write lock when it starts, so two writers queue instead of failing half-way with
"database is locked" (the audit chain relies on writers being serialised). PostgreSQL URLs
without a driver get psycopg 3.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

SQLITE_BUSY_TIMEOUT_MS = 10_000
DISPOSE_GRACE_SECONDS = 5.0
"""How long :func:`dispose` waits for in-flight sessions to hand their connections back."""


def normalise_url(url: str | URL) -> URL:
    """The URL with psycopg 3 as the PostgreSQL driver when none is named."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def safe_url(url: str | URL) -> str:
    """The URL with its password masked, for messages and logs."""
    return make_url(url).render_as_string(hide_password=True)


def make_engine(url: str | URL, *, foreign_keys: bool = True, **kwargs: Any) -> Engine:
    """An engine for ``url``. A SQLite file's folder is created if missing.

    ``foreign_keys=False`` is for SQLite migrations only: batch operations recreate tables, which
    foreign key enforcement would break; :mod:`services.registry.migrate` checks the keys after.
    """
    parsed = normalise_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, **kwargs)
    database = parsed.database
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        # Let SQLAlchemy's "begin" event, not pysqlite, decide when a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit (routes answer from them)."""
    return sessionmaker(engine, expire_on_commit=False)


def dispose(engine: Engine, *, grace_seconds: float = DISPOSE_GRACE_SECONDS) -> None:
    """Close ``engine``'s connections once in-flight sessions have returned theirs.

    ``Engine.dispose`` closes only the connections resting in the pool; one still checked out by
    a request thread (a sync endpoint keeps running after its client gave up) would go back to
    the discarded pool and be dropped unclosed later. Waiting, bounded by ``grace_seconds``, for
    the pool to drain lets shutdown close every connection it opened.
    """
    pool = engine.pool
    deadline = time.monotonic() + grace_seconds
    while isinstance(pool, QueuePool) and pool.checkedout() > 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    engine.dispose()

"""Alembic, driven from code: works from any working directory, no ``alembic.ini``.

``upgrade(url)`` is what ``splice registry migrate`` runs; :func:`check_schema` is what the app
factory runs before it serves anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect
from sqlalchemy.engine import URL

from services.registry.db import make_engine, safe_url

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
"""The repository's ``migrations/`` folder (the package is installed editable)."""

MIGRATE_HINT = "run `splice registry migrate` (alembic upgrade head)"


class SchemaError(RuntimeError):
    """The database schema is not the one this build of the registry expects."""


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at ``migrations/``; ``connection`` is handed to env.py."""
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise SchemaError(f"no Alembic environment at {MIGRATIONS_DIR}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this build knows."""
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise SchemaError(f"migrations must have exactly one head, found {heads}")
    return heads[0]


def _run(url: str | URL, fn: Any, *args: Any) -> None:
    # Foreign keys off on SQLite while tables are rebuilt (batch mode), then checked in full.
    engine = make_engine(url, foreign_keys=False)
    try:
        with engine.begin() as connection:
            fn(alembic_config(connection), *args)
            if connection.dialect.name == "sqlite":
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise SchemaError(f"migration left dangling foreign keys: {broken[:5]}")
    finally:
        engine.dispose()


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``, in one transaction."""
    _run(url, command.upgrade, revision)


def downgrade(url: str | URL, revision: str = "base") -> None:
    """Migrate the database at ``url`` down to ``revision`` (``base``: no registry tables)."""
    _run(url, command.downgrade, revision)


def current(url: str | URL) -> str | None:
    """The database's revision, or None when it was never migrated."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            heads = MigrationContext.configure(connection).get_current_heads()
    finally:
        engine.dispose()
    if len(heads) > 1:
        raise SchemaError(f"database {safe_url(url)} is at several revisions: {heads}")
    return heads[0] if heads else None


def check_schema(url: str | URL) -> str:
    """The database's revision if it is this build's head; otherwise :class:`SchemaError`
    saying what is wrong and what to do."""
    where = safe_url(url)
    script = ScriptDirectory.from_config(alembic_config())
    expected = head()
    found = current(url)
    if found is None:
        raise SchemaError(
            f"registry database {where} is not migrated (no Alembic revision); {MIGRATE_HINT}"
        )
    if found == expected:
        return found
    known = {rev.revision for rev in script.walk_revisions()}
    if found not in known:
        raise SchemaError(
            f"registry database {where} is at revision {found!r}, unknown to this build (its "
            f"newest is {expected!r}): it was migrated by a newer Splice; run that version, or "
            f"point SPLICE_REGISTRY_DATABASE_URL at another database"
        )
    raise SchemaError(
        f"registry database {where} is at revision {found!r}, behind this build's "
        f"{expected!r}; {MIGRATE_HINT}"
    )


def drift(url: str | URL) -> list[Any]:
    """Differences between the ORM models and the migrated database (autogenerate's view)."""
    from services.registry.models import Base

    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(
                connection, opts={"compare_type": True, "target_metadata": Base.metadata}
            )
            return list(compare_metadata(context, Base.metadata))
    finally:
        engine.dispose()


def check_no_drift(url: str | URL) -> None:
    """:class:`SchemaError` listing the differences if the models and migrations disagree."""
    diffs = drift(url)
    if diffs:
        listed = "\n".join(f"  {d!r}" for d in diffs)
        raise SchemaError(f"models and migrations differ; write a revision:\n{listed}")


def table_names(url: str | URL) -> set[str]:
    """Tables in the database (``alembic_version`` included), for checks and tests."""
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()

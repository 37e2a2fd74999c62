"""Alembic environment of the registry: the ORM metadata is the target.

Run through :mod:`services.registry.migrate`, which hands over an open connection. Without one
(plain ``alembic`` with a config of your own), the URL comes from ``sqlalchemy.url`` or else
from the registry settings (``SPLICE_REGISTRY_DATABASE_URL``).
"""

from __future__ import annotations

from typing import Any, Literal

from alembic import context
from sqlalchemy import Connection

from services.registry.db import make_engine, normalise_url
from services.registry.models import Base, UTCDateTime
from services.registry.settings import RegistrySettings

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or (
        RegistrySettings().database_url.get_secret_value()
    )


def _render_item(kind: str, obj: Any, _: Any) -> str | Literal[False]:
    """Write our column types as plain SQLAlchemy types, so revisions do not import models."""
    if kind == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def _migrate(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        render_item=_render_item,
        # SQLite cannot ALTER most things: later revisions rebuild tables in batch mode.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Emit SQL instead of running it (``alembic upgrade --sql``)."""
    context.configure(
        url=normalise_url(_url()),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Migrate over the connection handed in, or one of our own."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _migrate(connection)
        return
    engine = make_engine(_url(), foreign_keys=False)
    try:
        with engine.begin() as own:
            _migrate(own)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()

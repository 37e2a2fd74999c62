"""Console fixtures: the registry fixtures (SQLite and PostgreSQL) of tests/registry."""

from tests.registry.conftest import (  # noqa: F401
    admin_token,
    app,
    client,
    db_url,
    migrated_url,
    postgres_url,
)

"""Registry fixtures: every test runs on a SQLite file and on the PostgreSQL at 127.0.0.1:5432.

PostgreSQL is required, not optional: if nothing answers at ``SPLICE_TEST_POSTGRES`` the fixture
tries to start the local cluster, then brings up a throwaway server from the ``pgserver`` wheel
(:mod:`tests.throwaway_pg`). One database ``splice_test_<random>`` per test session, dropped at
the end; each test starts from an empty ``public`` schema.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from psycopg import sql
from pydantic import SecretStr

from services.registry import migrate
from services.registry.app import create_app
from services.registry.db import dispose
from services.registry.settings import RegistrySettings
from services.registry.store.admins import bootstrap_admin
from tests import throwaway_pg

PG_CONFIGURED = os.environ.get(
    "SPLICE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)
BACKENDS = ["sqlite", "postgresql"]
ISSUER = "https://registry.test"
"""The registry's public URL in tests: OAuth issuer, token audience and the test clients' base."""
KEY_ENCRYPTION_KEY = Fernet.generate_key().decode()
"""Encrypts the token signing keys at rest in tests, as in production."""
_maintenance: list[str] = []


def pg_maintenance() -> str:
    """The maintenance URL of the PostgreSQL the tests use (see :func:`_ensure_postgres`)."""
    _ensure_postgres()
    return _maintenance[0]


def _pg_connect() -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(pg_maintenance(), autocommit=True, connect_timeout=3)


def _ensure_postgres() -> None:
    """Find the tests' PostgreSQL: the one at ``SPLICE_TEST_POSTGRES`` (starting the local
    cluster if it is installed but down), else a throwaway server from the ``pgserver`` wheel
    (:mod:`tests.throwaway_pg`), so ``make test`` needs no PostgreSQL installed."""
    if _maintenance:
        return
    if not throwaway_pg.answers(PG_CONFIGURED):
        versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
        if versions and shutil.which("pg_ctlcluster"):
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                check=False,
                capture_output=True,
                timeout=60,
            )
            for _ in range(6):
                if throwaway_pg.answers(PG_CONFIGURED, timeout=1):
                    break
                time.sleep(0.5)
    try:
        _maintenance.append(throwaway_pg.maintenance_url(PG_CONFIGURED))
    except RuntimeError as exc:
        pytest.fail(f"no PostgreSQL at {PG_CONFIGURED}, and no throwaway one: {exc}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database for this test session (SQLAlchemy URL), dropped afterwards."""
    _ensure_postgres()
    name = f"splice_test_{secrets.token_hex(6)}"
    with _pg_connect() as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    base = pg_maintenance().rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}"
    finally:
        with _pg_connect() as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def _reset_postgres(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}"
    url: str = request.getfixturevalue("postgres_url")
    _reset_postgres(url)
    return url


@pytest.fixture
def migrated_url(db_url: str) -> str:
    """A database at the newest migration."""
    migrate.upgrade(db_url)
    return db_url


def registry_settings(url: str, **overrides: object) -> RegistrySettings:
    """Settings for tests: cheap argon2 (the hash format is the same), issuer :data:`ISSUER`."""
    values: dict[str, object] = {
        "database_url": SecretStr(url),
        "public_url": ISSUER,
        "key_encryption_key": SecretStr(KEY_ENCRYPTION_KEY),
        "argon2_time_cost": 1,
        "argon2_memory_kib": 1024,
        "argon2_parallelism": 1,
        # Off: one committed upsert per request costs the suite time; test_rate_limits.py,
        # test_hostile_input.py and tests/e2e/test_registry_workers.py turn them on.
        "rate_limits": False,
    }
    values.update(overrides)
    return RegistrySettings.model_validate(values)


@pytest.fixture
def app(migrated_url: str) -> Iterator[FastAPI]:
    """The registry app on a migrated database."""
    application = create_app(registry_settings(migrated_url))
    yield application
    dispose(application.state.engine)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the app in-process."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ISSUER) as c:
        yield c


@pytest.fixture
def admin_token(app: FastAPI) -> str:
    """The operator admin's token, from a real bootstrap."""
    with app.state.sessions() as session:
        token = bootstrap_admin(session).token
        session.commit()
    return token

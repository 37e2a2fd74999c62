"""Migrations up, down and up again; no drift; the app refuses a schema it was not built for."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.registry import migrate
from services.registry.app import create_app
from services.registry.db import make_engine, safe_url
from services.registry.models import AuthMethod, Base, OAuthClient
from tests.registry.conftest import registry_settings

REGISTRY_TABLES = set(Base.metadata.tables)


def _execute(url: str, statement: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    assert migrate.current(db_url) is None
    migrate.upgrade(db_url, "head")
    assert migrate.current(db_url) == migrate.head()
    assert REGISTRY_TABLES <= migrate.table_names(db_url)
    migrate.check_no_drift(db_url)

    migrate.downgrade(db_url, "base")
    assert migrate.current(db_url) is None
    assert migrate.table_names(db_url) & REGISTRY_TABLES == set()

    migrate.upgrade(db_url, "head")
    assert migrate.current(db_url) == migrate.head()
    migrate.check_no_drift(db_url)
    assert migrate.check_schema(db_url) == migrate.head()


def test_drift_check_is_not_vacuous(migrated_url: str) -> None:
    _execute(migrated_url, "ALTER TABLE organisations ADD COLUMN stray INTEGER")
    with pytest.raises(migrate.SchemaError, match="stray"):
        migrate.check_no_drift(migrated_url)


def test_app_refuses_an_unmigrated_database(db_url: str) -> None:
    with pytest.raises(migrate.SchemaError, match="not migrated") as err:
        create_app(registry_settings(db_url))
    assert "splice registry migrate" in str(err.value)


def test_app_refuses_a_newer_schema(migrated_url: str) -> None:
    _execute(migrated_url, "UPDATE alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(migrate.SchemaError, match="unknown to this build") as err:
        create_app(registry_settings(migrated_url))
    assert "9999_from_the_future" in str(err.value)
    assert "newer Splice" in str(err.value)


def test_messages_hide_the_database_password() -> None:
    shown = safe_url("postgresql://splice:hunter2@db.internal/registry")
    assert "hunter2" not in shown
    assert "db.internal/registry" in shown


def test_foreign_keys_are_enforced(migrated_url: str) -> None:
    engine = make_engine(migrated_url)
    try:
        with pytest.raises(IntegrityError), Session(engine) as session:
            session.add(
                OAuthClient(
                    org_id="no-such-org", auth_method=AuthMethod.PRIVATE_KEY_JWT, scope="jobs:run"
                )
            )
            session.flush()
    finally:
        engine.dispose()


_ROWS_AT_0005 = [
    "INSERT INTO organisations (id, name, kind, contact_email, status, created_at) VALUES "
    "('o1', 'Lumen', 'manufacturer', 'ops@l.example', 'approved', '2026-01-01 00:00:00')",
    "INSERT INTO contracts (id, title, owner_org_id, state, head_version, active_version, "
    "suspended_by_admin, created_at, updated_at) VALUES ('c1', 't', 'o1', 'active', 1, 1, "
    "FALSE, '2026-01-01 00:00:00', '2026-01-01 00:00:00')",
    "INSERT INTO jobs (id, contract_id, contract_version, label_party, label_org_id, status, "
    "progress, metrics, key_fingerprints, created_by, created_at, updated_at) VALUES ('j1', "
    "'c1', 3, 'pcb', 'o1', 'finished', 1.0, '{}', '{}', 'x', '2026-01-01 00:00:00', "
    "'2026-01-01 00:00:00')",
    "INSERT INTO model_versions (id, job_id, contract_id, version, metrics, artifact_digests, "
    "status, created_by, created_at) VALUES ('m1', 'j1', 'c1', 1, '{}', '{}', 'trained', 'x', "
    "'2026-01-01 00:00:00')",
]


def test_model_versions_keep_their_contract_version_across_the_upgrade(db_url: str) -> None:
    """Issue 15's revision: a model version recorded before it gets its job's contract
    version; what was never recorded (task, digests) stays empty; down and up again."""
    migrate.upgrade(db_url, "0005")
    for statement in _ROWS_AT_0005:
        _execute(db_url, statement)
    migrate.upgrade(db_url, "head")
    migrate.check_no_drift(db_url)
    engine = make_engine(db_url)
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT contract_version, task, spec_digest, model_digest FROM model_versions")
            ).one()
            job = conn.execute(text("SELECT spec_digest FROM jobs")).one()
    finally:
        engine.dispose()
    assert tuple(row) == (3, None, None, None) and job.spec_digest is None
    migrate.downgrade(db_url, "0005")
    migrate.upgrade(db_url, "head")
    assert migrate.current(db_url) == migrate.head()

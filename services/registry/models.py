"""The registry's tables as a SQLAlchemy 2 typed ORM.

Every column change comes with an Alembic revision in ``migrations/versions``; the test suite
fails when the models and the migrations drift apart. Secrets never reach a column: tokens are
stored as SHA-256 digests, client secrets as argon2id hashes (see
:mod:`services.registry.credentials`).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Enum, ForeignKey, MetaData, String, false
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from services.protocol.registry_types import OrgKind as OrgKind
from services.protocol.registry_types import OrgStatus as OrgStatus

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite drops the offset on its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: registry timestamps are timezone-aware")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (Alembic relies on them)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


def utcnow() -> datetime:
    """Now, in UTC, to the microsecond (what both backends store)."""
    return datetime.now(UTC)


def new_id() -> str:
    """A random UUID as text: the id of organisations, clients, tokens."""
    return str(uuid.uuid4())


def _str_enum(cls: type[StrEnum], name: str) -> Enum:
    # VARCHAR + CHECK on every backend: no native PostgreSQL type to create, alter or drop.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=32,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class AuthMethod(StrEnum):
    """How an OAuth client authenticates at the token endpoint."""

    CLIENT_SECRET_BASIC = "client_secret_basic"
    PRIVATE_KEY_JWT = "private_key_jwt"


class AdminUser(Base):
    """An operator administrator; the first one is created by ``bootstrap_admin``."""

    __tablename__ = "admin_users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # 1 for the bootstrap admin, NULL for any other: the unique constraint makes bootstrap a
    # once-only operation even when two bootstraps race.
    bootstrap_slot: Mapped[int | None] = mapped_column(unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Organisation(Base):
    """A company taking part: applies with an invitation, is approved, registers clients."""

    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    kind: Mapped[OrgKind] = mapped_column(_str_enum(OrgKind, "org_kind"))
    contact_email: Mapped[str] = mapped_column(String(320))
    status: Mapped[OrgStatus] = mapped_column(
        _str_enum(OrgStatus, "org_status"), default=OrgStatus.PENDING
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    approved_at: Mapped[datetime | None]
    suspended_at: Mapped[datetime | None]

    clients: Mapped[list[OAuthClient]] = relationship(back_populates="organisation", lazy="raise")


class Invitation(Base):
    """A one-time code an admin hands to a company so it can apply."""

    __tablename__ = "invitations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    note: Mapped[str | None] = mapped_column(String(500))
    created_by: Mapped[str] = mapped_column(String(200))  # the creating caller's subject
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    organisation_id: Mapped[str | None] = mapped_column(ForeignKey("organisations.id"))


class InitialAccessToken(Base):
    """One-time, expiring bearer token an approved organisation registers one client with."""

    __tablename__ = "initial_access_tokens"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    client_id: Mapped[str | None] = mapped_column(ForeignKey("oauth_clients.client_id"))
    admin: Mapped[bool] = mapped_column(default=False, server_default=false())
    """Whether the client it registers may hold scope ``org:admin`` (the token issued at
    approval: the organisation's first admin; later ones only when an admin asks)."""


class OAuthClient(Base):
    """An organisation's OAuth2 client (client credentials grant)."""

    __tablename__ = "oauth_clients"

    client_id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    client_name: Mapped[str | None] = mapped_column(String(200))
    auth_method: Mapped[AuthMethod] = mapped_column(_str_enum(AuthMethod, "auth_method"))
    secret_hash: Mapped[str | None] = mapped_column(String(255))
    jwks: Mapped[dict[str, Any] | None]
    scope: Mapped[str] = mapped_column(String(1000))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    credentials_rotated_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    organisation: Mapped[Organisation] = relationship(back_populates="clients", lazy="raise")


class OrganisationGrant(Base):
    """A role an operator granted an organisation beyond what its contracts give it, e.g.
    ``reports:all-contracts`` (every contract's revenue) or ``audit:verify``."""

    __tablename__ = "organisation_grants"

    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), primary_key=True)
    grant: Mapped[str] = mapped_column(String(64), primary_key=True)
    granted_by: Mapped[str] = mapped_column(String(200))
    granted_at: Mapped[datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """One line of the append-only, hash-chained audit log.

    ``hash = sha256(prev_hash + "\\n" + canonical JSON of seq, at, actor, action, subject,
    payload)``; ``seq`` is explicit (not autoincrement) so two writers can never fork the chain.
    """

    __tablename__ = "audit_log"

    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64), unique=True)


# Tables defined in sibling modules join Base.metadata when imported: import them here, so that
# whatever imports the models (Alembic, the drift check, the app) sees every table.
from services.registry import (  # noqa: E402, F401
    models_contracts,
    models_oauth,
    models_people,
    models_usage,
    models_webhooks,
)

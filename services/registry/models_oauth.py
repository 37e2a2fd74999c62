"""Tables of the OAuth2 authorization server: signing keys, spent client assertions, revocations.

Imported by :mod:`services.registry.models`, so these tables are part of ``Base.metadata``
wherever the models are (Alembic, the drift check, the app).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from services.registry.models import Base, _str_enum, utcnow


class SigningKeyStatus(StrEnum):
    """Where a token signing key is in its life: next -> active -> retired.

    The active key signs; the next key is already published so verifiers have it cached before
    it signs anything; a retired key stays published until every token it signed has expired.
    """

    NEXT = "next"
    ACTIVE = "active"
    RETIRED = "retired"


class SigningKey(Base):
    """A key pair the registry signs access tokens with.

    ``private_key`` is ``fernet:<token>`` (PKCS#8 PEM encrypted with the configured key
    encryption key) or ``pem:<PEM>`` when no key encryption key is configured.
    """

    __tablename__ = "oauth_signing_keys"

    kid: Mapped[str] = mapped_column(String(64), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    status: Mapped[SigningKeyStatus] = mapped_column(
        _str_enum(SigningKeyStatus, "signing_key_status"), index=True
    )
    public_jwk: Mapped[dict[str, Any]]
    private_key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[datetime | None]
    retired_at: Mapped[datetime | None]


class UsedClientAssertion(Base):
    """A spent RFC 7523 client assertion (``jti``), kept until it expires: no replays.

    In the database, not in process memory, so every registry worker refuses a replay.
    """

    __tablename__ = "oauth_used_assertions"

    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), primary_key=True
    )
    jti: Mapped[str] = mapped_column(String(255), primary_key=True)
    expires_at: Mapped[datetime]


class RevokedToken(Base):
    """An access token revoked before its expiry (RFC 7009), by ``jti``."""

    __tablename__ = "oauth_revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), index=True
    )
    revoked_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class OAuthResource(Base):
    """A resource (RFC 8707: a party service's URL, the audience of tokens for it) and the
    client that serves it: that client, and no other, may introspect tokens for it (RFC 7662).

    One holder per resource: a resource held by a live client of one organisation cannot be
    claimed by another organisation's client.
    """

    __tablename__ = "oauth_resources"

    resource: Mapped[str] = mapped_column(String(200), primary_key=True)
    client_id: Mapped[str] = mapped_column(
        ForeignKey("oauth_clients.client_id", ondelete="CASCADE"), index=True
    )
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)

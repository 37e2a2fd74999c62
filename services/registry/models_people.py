"""People at the registry (issue 19): users of organisations, their invitations, console
sessions and the authorization codes of the console's sign-in.

Imported by :mod:`services.registry.models`, so these tables are part of ``Base.metadata``
wherever the models are (Alembic, the drift check, the app). Passwords are argon2id hashes,
invitation codes, session tokens and authorization codes SHA-256 digests: no column holds a
secret a database reader could use.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from services.registry.models import Base, _str_enum, new_id, utcnow


class Role(StrEnum):
    """What a person may do for an organisation (the scopes are in
    :mod:`services.registry.people`)."""

    ADMIN = "admin"
    ENGINEER = "engineer"
    FINANCE = "finance"
    VIEWER = "viewer"


class User(Base):
    """A person who signs in to the console for one organisation."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    """Lower-cased: the sign-in name."""
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[Role] = mapped_column(_str_enum(Role, "user_role"))
    password_hash: Mapped[str] = mapped_column(String(255))
    totp_secret: Mapped[str | None] = mapped_column(String(255))
    """The TOTP seed, sealed like the signing keys (``fernet:`` or ``pem:``); None: off."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    disabled_at: Mapped[datetime | None]


class UserInvitation(Base):
    """A one-time code an organisation admin (or an operator) gives a person to join."""

    __tablename__ = "user_invitations"

    id: Mapped[str] = mapped_column(String(36), primary_key=True, default=new_id)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[Role] = mapped_column(_str_enum(Role, "invitation_role"))
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))


class ConsoleSession(Base):
    """A signed-in browser: the cookie holds a random token, this row its digest."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    """SHA-256 of the session cookie's value."""
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    token_jti: Mapped[str] = mapped_column(String(64))
    """The access token the sign-in ended with (kept server-side, never in the browser)."""
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class AuthorizationCode(Base):
    """An OAuth2 authorization code (RFC 6749 4.1) with its PKCE challenge (RFC 7636)."""

    __tablename__ = "oauth_authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    redirect_uri: Mapped[str] = mapped_column(String(500))
    scope: Mapped[str] = mapped_column(String(1000))
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime]

"""Console sessions: server-side, named by a random cookie, revoked at sign-out.

The browser holds only an opaque 256-bit token (HttpOnly, Secure, SameSite=Strict cookie); this
table holds its SHA-256 digest, the user, the CSRF token of the session and the ``jti`` of the
access token the sign-in ended with. A session ends at its absolute expiry, after
``idle`` without a request, at sign-out, or when its user is disabled or its organisation is no
longer approved.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.registry.credentials import token_digest
from services.registry.models import utcnow
from services.registry.models_people import ConsoleSession, User
from services.registry.store import audit
from services.registry.store.users import live_user

SESSION_PREFIX = "spl_ses_"


@dataclass(frozen=True)
class OpenedSession:
    """A new session and the cookie value naming it (not stored)."""

    row: ConsoleSession
    token: str


def open_session(session: Session, user: User, *, token_jti: str, ttl: timedelta) -> OpenedSession:
    """A new session for ``user`` (who just signed in)."""
    token = SESSION_PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    row = ConsoleSession(
        id=token_digest(token),
        user_id=user.id,
        csrf_token=secrets.token_urlsafe(32),
        token_jti=token_jti,
        created_at=now,
        expires_at=now + ttl,
        last_seen_at=now,
    )
    session.add(row)
    session.flush()
    audit.append(
        session,
        actor=f"user:{user.id}",
        action="user.signed_in",
        subject=f"organisation:{user.org_id}",
        payload={"session": row.id[:16]},
    )
    return OpenedSession(row=row, token=token)


def current(session: Session, token: str, *, idle: timedelta) -> tuple[ConsoleSession, User] | None:
    """The live session named by ``token`` and its user (touched: its idle clock restarts),
    or None."""
    row = session.get(ConsoleSession, token_digest(token))
    now = utcnow()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    if row.last_seen_at + idle <= now:
        return None
    user = live_user(session, row.user_id)
    if user is None:
        return None
    if now - row.last_seen_at > timedelta(seconds=30):  # a write per request is not needed
        row.last_seen_at = now
    return row, user


def revoke(session: Session, row: ConsoleSession, *, actor: str) -> None:
    """End the session (sign-out)."""
    if row.revoked_at is not None:
        return
    row.revoked_at = utcnow()
    audit.append(
        session,
        actor=actor,
        action="user.signed_out",
        subject=f"user:{row.user_id}",
        payload={"session": row.id[:16]},
    )


def revoke_all(session: Session, user_id: str) -> int:
    """End every session of a user (disabled, role changed); how many were live."""
    result = session.execute(
        update(ConsoleSession)
        .where(ConsoleSession.user_id == user_id, ConsoleSession.revoked_at.is_(None))
        .values(revoked_at=utcnow())
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def sessions_of(session: Session, user_id: str) -> list[ConsoleSession]:
    """A user's sessions, newest first."""
    return list(
        session.scalars(
            select(ConsoleSession)
            .where(ConsoleSession.user_id == user_id)
            .order_by(ConsoleSession.created_at.desc())
        )
    )

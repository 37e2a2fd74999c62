"""Token bookkeeping: spent client assertions (no replays) and revoked access tokens.

Both live in the database, not in process memory, so every registry worker agrees. Rows are only
needed until the assertion or token they name expires; expired rows are purged as new ones come.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.registry.models import utcnow
from services.registry.models_oauth import RevokedToken, UsedClientAssertion
from services.registry.store import audit

MAX_JTI_LENGTH = 255


def spend_assertion(session: Session, *, client_id: str, jti: str, expires_at: datetime) -> bool:
    """Record a client assertion's ``jti`` as used; False if it was used before (a replay).

    Concurrent uses of one ``jti`` collide on the primary key: exactly one transaction wins,
    the other is told it is a replay (on PostgreSQL it waits for the winner to commit first).
    The caller commits even when the rest of its request fails: an assertion is good once.
    """
    if not jti or len(jti) > MAX_JTI_LENGTH:
        return False
    session.execute(
        delete(UsedClientAssertion).where(
            UsedClientAssertion.client_id == client_id, UsedClientAssertion.expires_at < utcnow()
        )
    )
    try:
        with session.begin_nested():
            session.add(UsedClientAssertion(client_id=client_id, jti=jti, expires_at=expires_at))
    except IntegrityError:
        return False
    return True


def revoke_access_token(
    session: Session, *, jti: str, client_id: str, expires_at: datetime, actor: str
) -> bool:
    """Revoke the access token ``jti`` until it expires; False if it already was revoked."""
    session.execute(delete(RevokedToken).where(RevokedToken.expires_at < utcnow()))
    if session.get(RevokedToken, jti) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(RevokedToken(jti=jti, client_id=client_id, expires_at=expires_at))
    except IntegrityError:  # revoked concurrently: the same outcome
        return False
    audit.append(
        session,
        actor=actor,
        action="access_token.revoked",
        subject=f"oauth_client:{client_id}",
        payload={"jti": jti, "expires_at": expires_at.isoformat()},
    )
    return True


def is_revoked(session: Session, jti: str) -> bool:
    """Whether the access token ``jti`` was revoked."""
    return session.scalar(select(RevokedToken.jti).where(RevokedToken.jti == jti)) is not None

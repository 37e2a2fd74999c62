"""Invitation codes: created by an admin, spent once by an applying organisation."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from services.protocol.errors import ErrorCode, Forbidden
from services.registry.credentials import INVITATION_PREFIX, new_token, token_digest
from services.registry.models import Invitation, utcnow
from services.registry.store import audit


@dataclass(frozen=True)
class IssuedInvitation:
    """A new invitation and its code. The code is shown once and is not stored."""

    invitation: Invitation
    code: str


def create_invitation(
    session: Session, *, actor: str, ttl: timedelta, note: str | None = None
) -> IssuedInvitation:
    """A one-time invitation code valid for ``ttl``."""
    code = new_token(INVITATION_PREFIX)
    now = utcnow()
    invitation = Invitation(
        code_hash=token_digest(code),
        note=note,
        created_by=actor,
        created_at=now,
        expires_at=now + ttl,
    )
    session.add(invitation)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="invitation.created",
        subject=f"invitation:{invitation.id}",
        payload={"expires_at": invitation.expires_at.isoformat(), "note": note},
    )
    return IssuedInvitation(invitation=invitation, code=code)


def spend_invitation(session: Session, code: str) -> str:
    """Mark the invitation with this code used, atomically; return its id.

    One error for unknown, used and expired codes alike: an applicant learns nothing from it.
    """
    now = utcnow()
    spent = session.execute(
        update(Invitation)
        .where(
            Invitation.code_hash == token_digest(code),
            Invitation.used_at.is_(None),
            Invitation.expires_at > now,
        )
        .values(used_at=now)
        .returning(Invitation.id)
    ).scalar_one_or_none()
    if spent is None:
        raise Forbidden(
            "the invitation code is unknown, already used or expired",
            code=ErrorCode.INVALID_INVITATION,
        )
    return spent

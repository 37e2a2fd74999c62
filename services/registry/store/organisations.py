"""Organisations: apply with an invitation, approval, suspension, initial access tokens."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.protocol.errors import Conflict, ErrorCode, NotFound
from services.registry.credentials import INITIAL_ACCESS_PREFIX, new_token, token_digest
from services.registry.models import (
    InitialAccessToken,
    Invitation,
    Organisation,
    OrgKind,
    OrgStatus,
    utcnow,
)
from services.registry.store import audit
from services.registry.store.invitations import spend_invitation


@dataclass(frozen=True)
class IssuedAccessToken:
    """A new initial access token. ``token`` is shown once and is not stored."""

    record: InitialAccessToken
    token: str

    @property
    def expires_at(self) -> datetime:
        """When the token stops working if unused."""
        return self.record.expires_at


def get_organisation(session: Session, org_id: str, *, for_update: bool = False) -> Organisation:
    """The organisation, or :class:`NotFound`. ``for_update`` locks its row (PostgreSQL)."""
    stmt = select(Organisation).where(Organisation.id == org_id)
    if for_update:
        # Lock the row and reload it: an already loaded copy may predate the lock.
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    org = session.scalar(stmt)
    if org is None:
        raise NotFound(f"no organisation {org_id}", detail={"org_id": org_id})
    return org


def list_organisations(session: Session, status: OrgStatus | None = None) -> Sequence[Organisation]:
    """Organisations by name, optionally only those in ``status``."""
    stmt = select(Organisation).order_by(Organisation.name)
    if status is not None:
        stmt = stmt.where(Organisation.status == status)
    return session.scalars(stmt).all()


def apply(
    session: Session, *, name: str, kind: OrgKind, contact_email: str, invitation_code: str
) -> Organisation:
    """Register a pending organisation, spending the invitation code.

    The code is checked first, so names are not disclosed to anyone without a valid invitation;
    names are unique regardless of case.
    """
    invitation_id = spend_invitation(session, invitation_code)
    taken = session.scalar(
        select(Organisation.id).where(func.lower(Organisation.name) == name.lower())
    )
    if taken is not None:
        raise Conflict(f"an organisation named {name!r} exists", detail={"name": name})
    org = Organisation(name=name, kind=kind, contact_email=contact_email)
    session.add(org)
    session.flush()
    invitation = session.get_one(Invitation, invitation_id)
    invitation.organisation_id = org.id
    audit.append(
        session,
        actor=f"invitation:{invitation_id}",
        action="organisation.applied",
        subject=f"organisation:{org.id}",
        # No contact address: personal data has no place in a log that can never be edited.
        payload={"name": name, "kind": kind.value},
    )
    return org


def approve(
    session: Session, org_id: str, *, actor: str, token_ttl: timedelta
) -> tuple[Organisation, IssuedAccessToken]:
    """Approve a pending organisation and issue its first initial access token."""
    org = get_organisation(session, org_id, for_update=True)
    _require(org, OrgStatus.PENDING, "approve")
    org.status = OrgStatus.APPROVED
    org.approved_at = utcnow()
    audit.append(
        session, actor=actor, action="organisation.approved", subject=f"organisation:{org.id}"
    )
    return org, issue_initial_access_token(session, org_id, actor=actor, ttl=token_ttl, admin=True)


def suspend(session: Session, org_id: str, *, actor: str, reason: str | None) -> Organisation:
    """Suspend an organisation (pending or approved). Suspending a suspended one changes nothing."""
    org = get_organisation(session, org_id, for_update=True)
    if org.status is OrgStatus.SUSPENDED:
        return org
    previous = org.status
    org.status = OrgStatus.SUSPENDED
    org.suspended_at = utcnow()
    audit.append(
        session,
        actor=actor,
        action="organisation.suspended",
        subject=f"organisation:{org.id}",
        payload={"reason": reason, "previous_status": previous.value},
    )
    return org


def reinstate(session: Session, org_id: str, *, actor: str) -> Organisation:
    """Lift a suspension: back to approved, or to pending if it was never approved."""
    org = get_organisation(session, org_id, for_update=True)
    _require(org, OrgStatus.SUSPENDED, "reinstate")
    org.status = OrgStatus.APPROVED if org.approved_at is not None else OrgStatus.PENDING
    org.suspended_at = None
    audit.append(
        session,
        actor=actor,
        action="organisation.reinstated",
        subject=f"organisation:{org.id}",
        payload={"status": org.status.value},
    )
    return org


def issue_initial_access_token(
    session: Session, org_id: str, *, actor: str, ttl: timedelta, admin: bool = False
) -> IssuedAccessToken:
    """A one-time token with which an approved organisation registers one OAuth client;
    ``admin``: that client may hold scope ``org:admin`` (the organisation's admin)."""
    org = get_organisation(session, org_id)
    _require(org, OrgStatus.APPROVED, "issue an initial access token to")
    token = new_token(INITIAL_ACCESS_PREFIX)
    now = utcnow()
    record = InitialAccessToken(
        org_id=org.id,
        token_hash=token_digest(token),
        created_at=now,
        expires_at=now + ttl,
        admin=admin,
    )
    session.add(record)
    session.flush()
    audit.append(
        session,
        actor=actor,
        action="initial_access_token.issued",
        subject=f"organisation:{org.id}",
        payload={
            "token_id": record.id,
            "expires_at": record.expires_at.isoformat(),
            "admin": admin,
        },
    )
    return IssuedAccessToken(record=record, token=token)


def _require(org: Organisation, status: OrgStatus, verb: str) -> None:
    if org.status is not status:
        raise Conflict(
            f"cannot {verb} organisation {org.id}: it is {org.status.value}, not {status.value}",
            code=ErrorCode.INVALID_TRANSITION,
            detail={"status": org.status.value, "required": status.value},
        )

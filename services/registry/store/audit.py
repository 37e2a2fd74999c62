"""The append-only, hash-chained audit log.

Each entry's hash covers the previous entry's hash and its own content, so editing, deleting or
reordering any row breaks every hash after it. Appends are serialised (PostgreSQL: a transaction
advisory lock; SQLite: ``BEGIN IMMEDIATE``), and ``seq`` is a primary key assigned here, so a
lost race fails loudly instead of forking the chain. Cutting entries off the end is only
detectable against a head hash kept elsewhere: :func:`verify` reports the head for that purpose.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from services.registry.models import AuditEntry, OAuthClient, utcnow
from services.registry.models_people import User

GENESIS_HASH = "0" * 64
# Arbitrary constant key of the PostgreSQL advisory lock that serialises audit appends.
_AUDIT_LOCK_KEY = 0x5B1CE_A0D17
_VERIFY_BATCH = 500


def entry_hash(
    prev_hash: str,
    *,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    payload: dict[str, Any],
) -> str:
    """The chained hash of one entry (canonical JSON: sorted keys, no spaces, UTC time)."""
    body = {
        "seq": seq,
        "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
        "actor": actor,
        "action": action,
        "subject": subject,
        "payload": payload,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def append(
    session: Session,
    *,
    actor: str,
    action: str,
    subject: str,
    payload: dict[str, Any] | None = None,
) -> AuditEntry:
    """Add an entry in the caller's transaction; it commits (or not) with the change it records.

    ``payload`` must be JSON values only and must never hold a secret.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _AUDIT_LOCK_KEY})
    head = session.execute(
        select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq.desc()).limit(1)
    ).first()
    seq, prev_hash = (head.seq + 1, head.hash) if head is not None else (1, GENESIS_HASH)
    data = dict(payload or {})
    at = utcnow()
    digest = entry_hash(
        prev_hash, seq=seq, at=at, actor=actor, action=action, subject=subject, payload=data
    )
    entry = AuditEntry(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        subject=subject,
        payload=data,
        prev_hash=prev_hash,
        hash=digest,
    )
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class ChainReport:
    """What :func:`verify` found."""

    ok: bool
    entries: int
    head_hash: str
    first_bad_seq: int | None = None
    reason: str | None = None


def verify(session: Session) -> ChainReport:
    """Recompute the whole chain; report the first entry that does not fit."""
    columns = (
        AuditEntry.seq,
        AuditEntry.at,
        AuditEntry.actor,
        AuditEntry.action,
        AuditEntry.subject,
        AuditEntry.payload,
        AuditEntry.prev_hash,
        AuditEntry.hash,
    )
    expected_seq, prev_hash, count = 1, GENESIS_HASH, 0
    while True:
        batch = session.execute(
            select(*columns)
            .where(AuditEntry.seq >= expected_seq)
            .order_by(AuditEntry.seq)
            .limit(_VERIFY_BATCH)
        ).all()
        if not batch:
            return ChainReport(ok=True, entries=count, head_hash=prev_hash)
        for row in batch:
            problem = _problem(tuple(row), expected_seq, prev_hash)
            if problem is not None:
                return ChainReport(
                    ok=False,
                    entries=count,
                    head_hash=prev_hash,
                    first_bad_seq=row.seq,
                    reason=problem,
                )
            expected_seq, prev_hash, count = row.seq + 1, row.hash, count + 1


def _problem(row: tuple[Any, ...], expected_seq: int, prev_hash: str) -> str | None:
    seq, at, actor, action, subject, payload, stored_prev, stored_hash = row
    if seq != expected_seq:
        return f"sequence gap: expected {expected_seq}, found {seq}"
    if stored_prev != prev_hash:
        return "prev_hash does not match the previous entry's hash"
    recomputed = entry_hash(
        prev_hash, seq=seq, at=at, actor=actor, action=action, subject=subject, payload=payload
    )
    if recomputed != stored_hash:
        return "content does not match its hash"
    return None


def entries(session: Session, *, after: int = 0, limit: int = 100) -> list[AuditEntry]:
    """Entries with ``seq > after``, oldest first."""
    rows = session.scalars(
        select(AuditEntry).where(AuditEntry.seq > after).order_by(AuditEntry.seq).limit(limit)
    )
    return list(rows)


def organisation_actors(session: Session, org_id: str) -> list[str]:
    """The audit actors acting for an organisation: its users, its clients, itself."""
    users = session.scalars(select(User.id).where(User.org_id == org_id))
    clients = session.scalars(select(OAuthClient.client_id).where(OAuthClient.org_id == org_id))
    return [
        f"org:{org_id}",
        *(f"user:{u}" for u in users),
        *(f"client:{c}" for c in clients),
    ]


def organisation_entries(
    session: Session,
    org_id: str,
    *,
    action: str | None = None,
    before: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries an organisation's people and clients wrote, or about the organisation, newest
    first; ``action`` filters by prefix (``contract.``), ``before`` pages back by ``seq``."""
    actors = organisation_actors(session, org_id)
    about = [f"organisation:{org_id}"]
    stmt = select(AuditEntry).where(AuditEntry.actor.in_(actors) | AuditEntry.subject.in_(about))
    if action:
        stmt = stmt.where(AuditEntry.action.startswith(action, autoescape=True))
    if before is not None:
        stmt = stmt.where(AuditEntry.seq < before)
    return list(session.scalars(stmt.order_by(AuditEntry.seq.desc()).limit(limit)))

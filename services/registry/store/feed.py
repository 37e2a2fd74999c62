"""The revocation feed: what party services must stop honouring, in the order it happened.

Revoked access tokens and clients, suspended (and reinstated) organisations, and changes to a
contract's standing (suspended, reinstated, terminated, expired, an amendment agreed, a model
version deployed, retired or rolled back) are all written to the audit log in the transaction
that makes them, and audit appends are serialised: its ``seq`` is the feed's cursor, so a party
that asks for changes after the last ``seq`` it saw misses none and sees each once.

A subscriber sees the changes that concern it: contracts its organisation owns or is party to,
and the tokens, clients and organisations of those contracts' members (the only callers it
serves); operators see everything. A party service long-polls ``GET /v1/revocations``
(docs/adr/0005-revocation-feed.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.registry.auth import Caller
from services.registry.models import AuditEntry, OAuthClient
from services.registry.models_contracts import ContractParty, ContractRecord, ContractVersion
from services.registry.store.reports import visible_contracts

FEED_ACTIONS: dict[str, str] = {
    "access_token.revoked": "token_revoked",
    "oauth_client.revoked": "client_revoked",
    "organisation.suspended": "organisation_suspended",
    "organisation.reinstated": "organisation_reinstated",
    "contract.suspended": "contract_changed",
    "contract.reinstated": "contract_changed",
    "contract.terminated": "contract_changed",
    "contract.expired": "contract_changed",
    "contract.agreed": "contract_changed",
    "model_version.deployed": "contract_changed",
    "model_version.retired": "contract_changed",
    "model_version.rolled_back": "contract_changed",
}
"""Audit actions in the feed, and the kind of change each is."""
MAX_EVENTS = 500


@dataclass(frozen=True)
class FeedEvent:
    """One change: its audit ``seq``, kind and action, and what it concerns."""

    seq: int
    kind: str
    action: str
    at: datetime
    jti: str | None = None
    client_id: str | None = None
    org_id: str | None = None
    contract_id: str | None = None


@dataclass(frozen=True)
class Audience:
    """What a subscriber may see: contracts and organisations (None: everything)."""

    contracts: frozenset[str] | None
    orgs: frozenset[str] | None

    def sees(self, e: FeedEvent) -> bool:
        """Whether the change concerns the subscriber."""
        if e.contract_id is not None:
            return self.contracts is None or e.contract_id in self.contracts
        return self.orgs is None or (e.org_id is not None and e.org_id in self.orgs)


def audience_of(session: Session, caller: Caller) -> Audience:
    """The contracts ``caller``'s organisation owns or is party to, and their members."""
    if caller.is_admin or caller.org_id is None:
        return Audience(None, None)
    contracts = visible_contracts(session, caller.org_id)[0]
    members = set(
        session.scalars(
            select(ContractParty.org_id)
            .join(ContractVersion, ContractVersion.id == ContractParty.version_id)
            .where(ContractVersion.contract_id.in_(contracts))
        )
    )
    members |= set(
        session.scalars(select(ContractRecord.owner_org_id).where(ContractRecord.id.in_(contracts)))
    )
    return Audience(frozenset(contracts), frozenset(members | {caller.org_id}))


def head(session: Session) -> int:
    """The newest audit ``seq`` (0 for an empty log): where a new subscriber starts."""
    found = session.scalar(select(AuditEntry.seq).order_by(AuditEntry.seq.desc()).limit(1))
    return int(found or 0)


def changes(session: Session, after: int, audience: Audience) -> tuple[list[FeedEvent], int]:
    """The changes after ``after`` the audience sees (at most :data:`MAX_EVENTS`), and the
    last ``seq`` looked at (the next cursor, past changes the audience does not see)."""
    entries = list(
        session.scalars(
            select(AuditEntry)
            .where(AuditEntry.seq > after, AuditEntry.action.in_(list(FEED_ACTIONS)))
            .order_by(AuditEntry.seq)
            .limit(MAX_EVENTS)
        )
    )
    if not entries:
        return [], max(after, head(session))
    clients = _client_orgs(session, entries)
    events = [_event(e, clients) for e in entries]
    last = entries[-1].seq if len(entries) == MAX_EVENTS else max(entries[-1].seq, head(session))
    return [e for e in events if audience.sees(e)], last


def _client_orgs(session: Session, entries: list[AuditEntry]) -> dict[str, str]:
    ids = {
        e.subject.removeprefix("oauth_client:")
        for e in entries
        if e.action == "access_token.revoked"
    }
    if not ids:
        return {}
    rows = session.execute(
        select(OAuthClient.client_id, OAuthClient.org_id).where(OAuthClient.client_id.in_(ids))
    )
    return dict(rows.all())


def _event(entry: AuditEntry, client_orgs: dict[str, str]) -> FeedEvent:
    kind = FEED_ACTIONS[entry.action]
    base = FeedEvent(seq=entry.seq, kind=kind, action=entry.action, at=entry.at)
    subject_kind, _, subject_id = entry.subject.partition(":")
    payload = entry.payload
    if kind == "token_revoked":
        jti = payload.get("jti")
        return replace(
            base,
            jti=str(jti) if jti else None,
            client_id=subject_id,
            org_id=client_orgs.get(subject_id),
        )
    if kind == "client_revoked":
        org = payload.get("org_id")
        return replace(base, client_id=subject_id, org_id=str(org) if org else None)
    if subject_kind == "organisation":
        return replace(base, org_id=subject_id)
    return replace(base, contract_id=subject_id)

"""Signatures and state changes: sign, suspend, reinstate, terminate, expire.

A proposed version becomes the version in force (``agreed``, the contract ``active``) only when
every party named in it has accepted its exact digest. A rejection ends that negotiation: a
first proposal rejected terminates the contract; a rejected amendment leaves the version in
force as it is.
"""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.protocol.errors import Conflict, ErrorCode, Forbidden
from services.registry.auth import Caller
from services.registry.models_contracts import (
    ContractRecord,
    ContractState,
    ContractVersion,
    Decision,
    Signature,
    VersionState,
)
from services.registry.store import audit
from services.registry.store.contracts import (
    CONTRACTS_SIGN,
    end_contract,
    get_contract,
    parties_of,
    require_live,
    require_member,
    require_owner,
    transition_error,
    version_of,
    versions_in,
)


def sign(
    session: Session,
    caller: Caller,
    contract_id: str,
    *,
    party: str,
    decision: Decision,
    digest: str,
    reason: str | None,
    now: datetime,
) -> Signature:
    """Record ``party``'s decision on the proposed version whose digest is ``digest``.

    Only the party's own organisation signs (operators cannot sign for it). A digest other than
    the proposed version's is refused (409 ``conflict``): the party saw another text.
    """
    caller.require_scope(CONTRACTS_SIGN)
    record = get_contract(session, contract_id, for_update=True)
    if caller.is_admin:
        raise Forbidden("a party's own organisation signs for it; operators cannot")
    proposed = next(iter(versions_in(session, record.id, VersionState.PROPOSED)), None)
    if proposed is None:
        require_member(session, caller, record)
        require_live(session, record, now)
        raise Conflict(
            f"contract {record.id} has no proposed version to sign",
            code=ErrorCode.INVALID_TRANSITION,
            detail={"state": record.state.value},
        )
    entry = next((p for p in parties_of(session, proposed.id) if p.name == party), None)
    if entry is None or caller.org_id != entry.org_id:
        raise Forbidden(
            f"only the organisation of party {party!r} of the proposed version signs for it",
            detail={"party": party},
        )
    require_live(session, record, now)
    if digest != proposed.digest:
        raise Conflict(
            "the digest is not the proposed version's: fetch the contract again and review it",
            detail={"version": proposed.version, "digest": proposed.digest},
        )
    if proposed.valid_until <= now:
        raise Conflict(
            f"version {proposed.version}'s validity ended at {proposed.valid_until.isoformat()}",
            code=ErrorCode.INVALID_TRANSITION,
        )
    done = session.scalar(
        select(Signature).where(Signature.version_id == proposed.id, Signature.party == party)
    )
    if done is not None:
        raise Conflict(
            f"party {party!r} already answered version {proposed.version}: {done.decision.value}",
            detail={"decision": done.decision.value},
        )
    signature = Signature(
        version_id=proposed.id,
        party=party,
        org_id=entry.org_id,
        decision=decision,
        digest=digest,
        signed_by=caller.subject,
        reason=reason,
        at=now,
    )
    session.add(signature)
    session.flush()
    audit.append(
        session,
        actor=caller.subject,
        action="contract.accepted" if decision is Decision.ACCEPT else "contract.rejected",
        subject=f"contract:{record.id}",
        payload={
            "version": proposed.version,
            "party": party,
            "org_id": entry.org_id,
            "digest": digest,
            "reason": reason,
        },
    )
    if decision is Decision.REJECT:
        _rejected(session, record, proposed, party, now)
    elif _all_accepted(session, proposed):
        _agreed(session, record, proposed, now)
    return signature


def _all_accepted(session: Session, version: ContractVersion) -> bool:
    accepted = set(
        session.scalars(
            select(Signature.party).where(
                Signature.version_id == version.id,
                Signature.decision == Decision.ACCEPT,
                Signature.digest == version.digest,
            )
        )
    )
    return {p.name for p in parties_of(session, version.id)} <= accepted


def _rejected(
    session: Session, record: ContractRecord, version: ContractVersion, party: str, now: datetime
) -> None:
    version.state = VersionState.REJECTED
    version.decided_at = version.updated_at = now
    record.updated_at = now
    if record.active_version is None:
        end_contract(
            session,
            record,
            ContractState.TERMINATED,
            actor="registry",
            reason=f"party {party!r} rejected version {version.version}",
            now=now,
        )


def _agreed(
    session: Session, record: ContractRecord, version: ContractVersion, now: datetime
) -> None:
    previous = record.active_version
    if previous is not None:
        old = version_of(session, record.id, previous)
        old.state = VersionState.SUPERSEDED
        old.updated_at = now
    version.state = VersionState.AGREED
    version.decided_at = version.updated_at = now
    record.active_version = version.version
    record.valid_until = version.valid_until
    record.title = json.loads(version.document)["title"]
    if record.state is ContractState.PROPOSED:
        record.state = ContractState.ACTIVE
    record.updated_at = now
    session.flush()
    audit.append(
        session,
        actor="registry",
        action="contract.agreed",
        subject=f"contract:{record.id}",
        payload={
            "version": version.version,
            "digest": version.digest,
            "superseded_version": previous,
            "state": record.state.value,
        },
    )


def suspend(
    session: Session, caller: Caller, contract_id: str, *, reason: str, now: datetime
) -> ContractRecord:
    """Suspend an active contract (its owner, or an operator admin): no job may run under it
    and party services refuse its calls until it is reinstated."""
    record = get_contract(session, contract_id, for_update=True)
    require_owner(caller, record, admin_ok=True)
    require_live(session, record, now)
    if record.state is not ContractState.ACTIVE:
        raise transition_error(record, "suspend", "active")
    record.state = ContractState.SUSPENDED
    record.suspended_by = caller.subject
    record.suspended_by_admin = caller.is_admin
    record.updated_at = now
    _state_audit(session, caller, record, "contract.suspended", reason)
    return record


def reinstate(
    session: Session, caller: Caller, contract_id: str, *, now: datetime
) -> ContractRecord:
    """Lift a suspension. An operator's suspension is lifted by an operator only."""
    record = get_contract(session, contract_id, for_update=True)
    require_owner(caller, record, admin_ok=True)
    if record.suspended_by_admin and not caller.is_admin:
        raise Forbidden("an operator suspended this contract: only an operator reinstates it")
    require_live(session, record, now)
    if record.state is not ContractState.SUSPENDED:
        raise transition_error(record, "reinstate", "suspended")
    record.state = ContractState.ACTIVE
    record.suspended_by = None
    record.suspended_by_admin = False
    record.updated_at = now
    _state_audit(session, caller, record, "contract.reinstated", None)
    return record


def terminate(
    session: Session, caller: Caller, contract_id: str, *, reason: str, now: datetime
) -> ContractRecord:
    """End a contract for good (its owner, or an operator admin): open versions are withdrawn,
    running jobs cancelled."""
    record = get_contract(session, contract_id, for_update=True)
    require_owner(caller, record, admin_ok=True)
    require_live(session, record, now)
    end_contract(
        session, record, ContractState.TERMINATED, actor=caller.subject, reason=reason, now=now
    )
    return record


def expire_due(session: Session, *, now: datetime) -> list[str]:
    """Mark every active or suspended contract whose validity ended as expired (the sweep);
    returns their ids. Idempotent."""
    due = session.scalars(
        select(ContractRecord)
        .where(
            ContractRecord.state.in_((ContractState.ACTIVE, ContractState.SUSPENDED)),
            ContractRecord.valid_until <= now,
        )
        .order_by(ContractRecord.id)
        .with_for_update()
    ).all()
    for record in due:
        end_contract(session, record, ContractState.EXPIRED, actor="registry", reason=None, now=now)
    return [r.id for r in due]


def _state_audit(
    session: Session, caller: Caller, record: ContractRecord, action: str, reason: str | None
) -> None:
    audit.append(
        session,
        actor=caller.subject,
        action=action,
        subject=f"contract:{record.id}",
        payload={"version": record.active_version, "reason": reason},
    )

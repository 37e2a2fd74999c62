"""Writing contract versions: create, replace a draft, propose, amend.

A version's document is the validated contract as canonical JSON, with its SHA-256 digest: what
the parties sign. Its ``owner.org`` and each ``parties[i].org`` name a registry organisation by
id or, failing that, by its (case-insensitively unique) name; each must be approved. Problems
with the document are :class:`contracts.ContractValidationError` (422, field paths), raised
before anything is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from contracts import Contract, ContractValidationError, FieldError, canonical_json, contract_digest
from services.protocol.errors import Conflict, ErrorCode, Forbidden
from services.registry.auth import Caller
from services.registry.models import Organisation, OrgStatus
from services.registry.models_contracts import (
    ContractParty,
    ContractRecord,
    ContractState,
    ContractVersion,
    PartyRole,
    VersionState,
)
from services.registry.store import audit
from services.registry.store.contracts import (
    CONTRACTS_WRITE,
    get_contract,
    parties_of,
    require_live,
    require_owner,
    transition_error,
    version_of,
    versions_in,
)


@dataclass(frozen=True)
class Resolved:
    """A validated contract with its owner and parties mapped to organisation ids."""

    contract: Contract
    owner_org_id: str
    party_orgs: dict[str, str]


def _find(session: Session, ref: str) -> Organisation | None:
    org = session.scalar(select(Organisation).where(Organisation.id == ref))
    if org is not None:
        return org
    named = session.scalars(
        select(Organisation).where(func.lower(Organisation.name) == ref.lower()).limit(2)
    ).all()
    return named[0] if len(named) == 1 else None


def resolve(session: Session, contract: Contract) -> Resolved:
    """Map the contract's organisations to approved registry organisations, or raise
    :class:`ContractValidationError` naming every field that does not resolve."""
    errors: list[FieldError] = []

    def lookup(ref: str, loc: str) -> str:
        org = _find(session, ref)
        if org is None:
            msg = f"no organisation {ref!r} in the registry (give its id or its name)"
            errors.append(FieldError(loc=loc, msg=msg))
            return ""
        if org.status is not OrgStatus.APPROVED:
            msg = f"organisation {ref!r} is {org.status.value}; only approved ones take part"
            errors.append(FieldError(loc=loc, msg=msg))
        return org.id

    owner_org = lookup(contract.owner.org, "owner.org")
    party_orgs: dict[str, str] = {}
    seen: dict[str, int] = {}
    for i, party in enumerate(contract.parties):
        org_id = lookup(party.org, f"parties.{i}.org")
        if org_id and org_id in seen:
            msg = f"{party.org!r} is the organisation of parties.{seen[org_id]} too"
            errors.append(FieldError(loc=f"parties.{i}.org", msg=msg))
        elif org_id and org_id == owner_org and party.name != contract.owner.name:
            msg = f"the owner's organisation is party {party.name!r}: name the owner that"
            errors.append(FieldError(loc="owner.name", msg=msg))
        seen.setdefault(org_id, i)
        party_orgs[party.name] = org_id
    if errors:
        raise ContractValidationError(errors)
    return Resolved(contract=contract, owner_org_id=owner_org, party_orgs=party_orgs)


def _require_same_owner(resolved: Resolved, record: ContractRecord) -> None:
    if resolved.owner_org_id != record.owner_org_id:
        raise ContractValidationError.single(
            "owner.org", "the owner of a contract cannot change; start a new contract"
        )


def _write_parties(session: Session, version: ContractVersion, resolved: Resolved) -> None:
    for party in resolved.contract.parties:
        session.add(
            ContractParty(
                version_id=version.id,
                name=party.name,
                org_id=resolved.party_orgs[party.name],
                role=PartyRole(party.role),
            )
        )


def _fill(version: ContractVersion, resolved: Resolved, now: datetime) -> None:
    c = resolved.contract
    version.document = canonical_json(c).decode()
    version.digest = contract_digest(c)
    version.valid_from = c.validity.start
    version.valid_until = c.validity.end
    version.training_deadline = c.training.deadline
    version.updated_at = now


def _new_version(
    session: Session, caller: Caller, record: ContractRecord, resolved: Resolved, now: datetime
) -> ContractVersion:
    assert caller.org_id is not None
    version = ContractVersion(
        contract_id=record.id,
        version=record.head_version,
        state=VersionState.DRAFT,
        created_by=caller.subject,
        created_by_org=caller.org_id,
        created_at=now,
    )
    _fill(version, resolved, now)
    session.add(version)
    session.flush()
    _write_parties(session, version, resolved)
    session.flush()
    return version


def _audit(session: Session, caller: Caller, action: str, version: ContractVersion) -> None:
    audit.append(
        session,
        actor=caller.subject,
        action=action,
        subject=f"contract:{version.contract_id}",
        payload={"version": version.version, "digest": version.digest},
    )


def create_contract(
    session: Session, caller: Caller, resolved: Resolved, *, now: datetime
) -> tuple[ContractRecord, ContractVersion]:
    """A new contract whose version 1 is a draft; the caller must act for its owner."""
    caller.require_scope(CONTRACTS_WRITE)
    if caller.is_admin or caller.org_id != resolved.owner_org_id:
        raise Forbidden(
            "a contract is created by its owner organisation (owner.org)",
            detail={"owner_org_id": resolved.owner_org_id},
        )
    record = ContractRecord(
        title=resolved.contract.title,
        owner_org_id=resolved.owner_org_id,
        state=ContractState.DRAFT,
        head_version=1,
        created_at=now,
        updated_at=now,
    )
    session.add(record)
    session.flush()
    version = _new_version(session, caller, record, resolved, now)
    _audit(session, caller, "contract.created", version)
    return record, version


def replace_draft(
    session: Session, caller: Caller, contract_id: str, resolved: Resolved, *, now: datetime
) -> ContractVersion:
    """Replace the text of the contract's draft version (the newest, still a draft)."""
    record = get_contract(session, contract_id, for_update=True)
    require_owner(caller, record)
    require_live(session, record, now)
    draft = version_of(session, record.id, record.head_version)
    if draft.state is not VersionState.DRAFT:
        raise Conflict(
            f"version {draft.version} is {draft.state.value}, and only a draft can change; "
            "propose an amendment instead",
            code=ErrorCode.INVALID_TRANSITION,
            detail={"version": draft.version, "state": draft.state.value},
        )
    _require_same_owner(resolved, record)
    session.execute(delete(ContractParty).where(ContractParty.version_id == draft.id))
    _fill(draft, resolved, now)
    _write_parties(session, draft, resolved)
    if record.active_version is None:
        record.title = resolved.contract.title
    record.updated_at = now
    session.flush()
    _audit(session, caller, "contract.draft_replaced", draft)
    return draft


def amend(
    session: Session, caller: Caller, contract_id: str, resolved: Resolved, *, now: datetime
) -> ContractVersion:
    """A new draft version of a proposed, active or suspended contract. Every party signs it
    again; the version in force stays in force until the amendment is agreed."""
    record = get_contract(session, contract_id, for_update=True)
    require_owner(caller, record)
    require_live(session, record, now)
    if record.state is ContractState.DRAFT:
        raise transition_error(record, "amend", "proposed, active or suspended (edit the draft)")
    head = version_of(session, record.id, record.head_version)
    if head.state is VersionState.DRAFT:
        raise Conflict(
            f"version {head.version} is still a draft: replace it instead of adding another",
            code=ErrorCode.INVALID_TRANSITION,
            detail={"version": head.version, "state": head.state.value},
        )
    _require_same_owner(resolved, record)
    record.head_version += 1
    record.updated_at = now
    version = _new_version(session, caller, record, resolved, now)
    _audit(session, caller, "contract.amendment_drafted", version)
    return version


def propose(
    session: Session, caller: Caller, contract_id: str, *, now: datetime
) -> ContractVersion:
    """Propose the draft to its parties. From here on the version never changes; an older
    proposal still waiting for signatures is withdrawn."""
    record = get_contract(session, contract_id, for_update=True)
    require_owner(caller, record)
    require_live(session, record, now)
    draft = version_of(session, record.id, record.head_version)
    if draft.state is not VersionState.DRAFT:
        raise Conflict(
            f"there is no draft to propose: version {draft.version} is {draft.state.value}",
            code=ErrorCode.INVALID_TRANSITION,
            detail={"version": draft.version, "state": draft.state.value},
        )
    if draft.valid_until <= now:
        raise Conflict(
            f"version {draft.version}'s validity ended at {draft.valid_until.isoformat()}",
            code=ErrorCode.INVALID_TRANSITION,
        )
    orgs = {p.org_id for p in parties_of(session, draft.id)} | {record.owner_org_id}
    idle = session.scalars(
        select(Organisation.id).where(
            Organisation.id.in_(orgs), Organisation.status != OrgStatus.APPROVED
        )
    ).all()
    if idle:
        raise Conflict(
            "every organisation of the contract must be approved to propose it",
            detail={"not_approved": sorted(idle)},
        )
    withdrawn = []
    for older in versions_in(session, record.id, VersionState.PROPOSED):
        older.state = VersionState.WITHDRAWN
        older.decided_at = older.updated_at = now
        withdrawn.append(older.version)
    draft.state = VersionState.PROPOSED
    draft.proposed_at = draft.updated_at = now
    if record.state is ContractState.DRAFT:
        record.state = ContractState.PROPOSED
    record.updated_at = now
    session.flush()
    audit.append(
        session,
        actor=caller.subject,
        action="contract.proposed",
        subject=f"contract:{record.id}",
        payload={
            "version": draft.version,
            "digest": draft.digest,
            "parties": {p.name: p.org_id for p in parties_of(session, draft.id)},
            "withdrawn_versions": withdrawn,
        },
    )
    return draft


def title_of(version: ContractVersion) -> str:
    """The contract title a version's document gives."""
    title: str = json.loads(version.document)["title"]
    return title

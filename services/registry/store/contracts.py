"""Contracts: loading and locking, who may see and change one, its state now, and reads.

Writing versions lives in :mod:`.contract_drafts`, signatures and state changes in
:mod:`.contract_lifecycle`. A contract's stored ``state`` is exact except for expiry, which is
computed on read (:func:`effective_state`) and written by the next change or by
:func:`services.registry.store.contract_lifecycle.expire_due`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services.protocol.errors import Conflict, ErrorCode, Forbidden, NotFound
from services.registry.auth import Caller
from services.registry.models_contracts import (
    FINAL_CONTRACT_STATES,
    RUNNING_JOB_STATUSES,
    ContractParty,
    ContractRecord,
    ContractState,
    ContractVersion,
    Job,
    JobStatus,
    Signature,
    VersionState,
)
from services.registry.store import audit

CONTRACTS_WRITE = "contracts:write"
CONTRACTS_SIGN = "contracts:sign"
JOBS_RUN = "jobs:run"
OPEN_VERSION_STATES = (VersionState.DRAFT, VersionState.PROPOSED)


class ContractExpired(Conflict):
    """The contract's validity ended. Raised after its expiry was written to the session: the
    caller commits that before answering (nothing else was changed)."""

    code = ErrorCode.INVALID_TRANSITION


def effective_state(record: ContractRecord, now: datetime) -> ContractState:
    """The state as of ``now``: an active or suspended contract past its validity is expired."""
    if (
        record.state in (ContractState.ACTIVE, ContractState.SUSPENDED)
        and record.valid_until is not None
        and record.valid_until <= now
    ):
        return ContractState.EXPIRED
    return record.state


def get_contract(session: Session, contract_id: str, *, for_update: bool = False) -> ContractRecord:
    """The contract, or :class:`NotFound`. ``for_update`` locks its row (PostgreSQL; SQLite
    transactions are serialised anyway): every change to a contract, its versions, signatures
    and jobs takes this lock first."""
    stmt = select(ContractRecord).where(ContractRecord.id == contract_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    record = session.scalar(stmt)
    if record is None:
        raise NotFound(f"no contract {contract_id}", detail={"contract_id": contract_id})
    return record


def is_member(session: Session, caller: Caller, record: ContractRecord) -> bool:
    """Admins, the owner, and every organisation named as a party in any version."""
    if caller.is_admin or caller.org_id == record.owner_org_id:
        return True
    if caller.org_id is None:
        return False
    found = session.scalar(
        select(ContractParty.id)
        .join(ContractVersion, ContractVersion.id == ContractParty.version_id)
        .where(ContractVersion.contract_id == record.id, ContractParty.org_id == caller.org_id)
        .limit(1)
    )
    return found is not None


def require_member(session: Session, caller: Caller, record: ContractRecord) -> None:
    """:class:`Forbidden` unless the caller may read the contract."""
    if not is_member(session, caller, record):
        raise Forbidden("this organisation is neither the owner of nor a party to this contract")


def require_owner(caller: Caller, record: ContractRecord, *, admin_ok: bool = False) -> None:
    """:class:`Forbidden` unless the caller acts for the owner with ``contracts:write`` (or is an
    operator admin, where ``admin_ok``)."""
    if admin_ok and caller.is_admin:
        return
    caller.require_scope(CONTRACTS_WRITE)
    if caller.is_admin or caller.org_id != record.owner_org_id:
        raise Forbidden(
            "only the contract's owner organisation may do this",
            detail={"owner_org_id": record.owner_org_id},
        )


def require_live(session: Session, record: ContractRecord, now: datetime) -> None:
    """:class:`Conflict` for a terminated or expired contract; a contract found expired is
    marked so first (:class:`ContractExpired`). Call after the authorization checks."""
    if record.state in FINAL_CONTRACT_STATES:
        raise _final(record)
    if effective_state(record, now) is ContractState.EXPIRED:
        end_contract(session, record, ContractState.EXPIRED, actor="registry", reason=None, now=now)
        raise ContractExpired(
            f"contract {record.id} expired at {_iso(record.valid_until)}",
            detail={"state": "expired"},
        )


def end_contract(
    session: Session,
    record: ContractRecord,
    final: ContractState,
    *,
    actor: str,
    reason: str | None,
    now: datetime,
) -> None:
    """Make the contract ``final`` (terminated or expired): open versions are withdrawn and
    running jobs cancelled, each change audited."""
    assert final in FINAL_CONTRACT_STATES
    record.state = final
    record.updated_at = now
    withdrawn = []
    for version in versions_in(session, record.id, *OPEN_VERSION_STATES):
        version.state = VersionState.WITHDRAWN
        version.decided_at = version.updated_at = now
        withdrawn.append(version.version)
    audit.append(
        session,
        actor=actor,
        action=f"contract.{final.value}",
        subject=f"contract:{record.id}",
        payload={"reason": reason, "withdrawn_versions": withdrawn},
    )
    running = session.scalars(
        select(Job)
        .where(Job.contract_id == record.id, Job.status.in_(RUNNING_JOB_STATUSES))
        .order_by(Job.created_at)
    ).all()
    for job in running:
        previous = job.status
        job.status = JobStatus.CANCELLED
        job.updated_at = job.finished_at = now
        audit.append(
            session,
            actor=actor,
            action="job.status_changed",
            subject=f"job:{job.id}",
            payload={"from": previous.value, "to": job.status.value, "why": f"contract {final}"},
        )


def _final(record: ContractRecord) -> Conflict:
    return Conflict(
        f"contract {record.id} is {record.state.value}: that is final",
        code=ErrorCode.INVALID_TRANSITION,
        detail={"state": record.state.value},
    )


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else "?"


def transition_error(record: ContractRecord, verb: str, required: str) -> Conflict:
    """A 409 ``invalid_transition`` for doing ``verb`` in the contract's current state."""
    return Conflict(
        f"cannot {verb} contract {record.id}: it is {record.state.value}, not {required}",
        code=ErrorCode.INVALID_TRANSITION,
        detail={"state": record.state.value, "required": required},
    )


def version_of(session: Session, contract_id: str, number: int) -> ContractVersion:
    """Version ``number`` of a contract, or :class:`NotFound`."""
    version = session.scalar(
        select(ContractVersion).where(
            ContractVersion.contract_id == contract_id, ContractVersion.version == number
        )
    )
    if version is None:
        raise NotFound(f"contract {contract_id} has no version {number}")
    return version


def versions_in(
    session: Session, contract_id: str, *states: VersionState
) -> Sequence[ContractVersion]:
    """A contract's versions (those in ``states`` if any are named), oldest first."""
    stmt = select(ContractVersion).where(ContractVersion.contract_id == contract_id)
    if states:
        stmt = stmt.where(ContractVersion.state.in_(states))
    return session.scalars(stmt.order_by(ContractVersion.version)).all()


def parties_of(session: Session, version_id: str) -> Sequence[ContractParty]:
    """The parties of one version, by name."""
    stmt = select(ContractParty).where(ContractParty.version_id == version_id)
    return session.scalars(stmt.order_by(ContractParty.name)).all()


def list_contracts(
    session: Session, caller: Caller, state: ContractState | None = None
) -> Sequence[ContractRecord]:
    """Contracts the caller may see (all, for admins), newest first. ``state`` filters on the
    stored state (expiry not yet swept shows as active or suspended)."""
    stmt = select(ContractRecord).order_by(ContractRecord.created_at.desc())
    if not caller.is_admin:
        as_party = (
            select(ContractVersion.contract_id)
            .join(ContractParty, ContractParty.version_id == ContractVersion.id)
            .where(ContractParty.org_id == caller.org_id)
        )
        stmt = stmt.where(
            or_(ContractRecord.owner_org_id == caller.org_id, ContractRecord.id.in_(as_party))
        )
    if state is not None:
        stmt = stmt.where(ContractRecord.state == state)
    return session.scalars(stmt).all()


@dataclass(frozen=True)
class VersionView:
    """A version with its parties and signatures, for answers."""

    version: ContractVersion
    parties: Sequence[ContractParty]
    signatures: Sequence[Signature]

    @property
    def document(self) -> dict[str, Any]:
        """The signed document as a JSON object."""
        data: dict[str, Any] = json.loads(self.version.document)
        return data


def version_views(session: Session, contract_id: str) -> list[VersionView]:
    """Every version of a contract with its parties and signatures, oldest first."""
    versions = versions_in(session, contract_id)
    ids = [v.id for v in versions]
    parties = session.scalars(
        select(ContractParty).where(ContractParty.version_id.in_(ids)).order_by(ContractParty.name)
    ).all()
    signatures = session.scalars(
        select(Signature).where(Signature.version_id.in_(ids)).order_by(Signature.at)
    ).all()
    return [
        VersionView(
            version=v,
            parties=[p for p in parties if p.version_id == v.id],
            signatures=[s for s in signatures if s.version_id == v.id],
        )
        for v in versions
    ]

"""The contract check party services ask before serving a call: is the contract in force, is
this party in it in this role, is this job its job, how is the cut layer protected, and which
model version (trained by which job) is deployed.
Read-only and a handful of indexed reads."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import select
from sqlalchemy.orm import Session

from contracts import Protection
from contracts.loader import upgrade_stored
from services.registry.auth import Caller
from services.registry.models_contracts import (
    ContractState,
    Job,
    ModelStatus,
    ModelVersion,
    PartyRole,
)
from services.registry.models_usage import ModelApproval
from services.registry.store.contracts import (
    effective_state,
    get_contract,
    parties_of,
    require_member,
    version_of,
)

log = logging.getLogger("splice.registry.contracts")
_PROTECTION: TypeAdapter[Protection] = TypeAdapter(Protection)


@dataclass(frozen=True)
class PartyEntry:
    """One party of the version in force: its name, role and organisation."""

    name: str
    role: PartyRole
    org_id: str


@dataclass(frozen=True)
class CheckResult:
    """What a party service needs to know about a contract, a party and a job."""

    contract_id: str
    state: ContractState
    active: bool
    contract_version: int | None
    digest: str | None
    valid_until: datetime | None
    party: str | None
    role: PartyRole | None
    org_id: str | None
    role_ok: bool | None
    job_id: str | None
    job_ok: bool | None
    job_status: str | None
    parties: tuple[PartyEntry, ...] = ()
    protection: dict[str, Any] | None = None
    deployed_model_version: int | None = None
    deployed_job_id: str | None = None
    training_deadline: datetime | None = None
    job_locked: bool | None = None
    deployed_model_digest: str | None = None
    deployed_segment_digests: dict[str, str] | None = None


def check(
    session: Session,
    caller: Caller,
    contract_id: str,
    *,
    now: datetime,
    party: str | None = None,
    role: PartyRole | None = None,
    job_id: str | None = None,
) -> CheckResult:
    """Is the contract in force now; is ``party`` in it (in ``role``); is ``job_id`` its job.

    ``active`` is true only for an active contract inside its validity period. ``protection``
    is that of the version in force (None without one). ``deployed_model_version`` and
    ``deployed_job_id`` name the model version serving predictions and the job that trained it;
    ``training_deadline`` is the version's: no training of the contract runs past it.
    ``job_locked``: ``job_id`` has a model version that is approved or was deployed (parties
    never delete or prepare it again). ``deployed_model_digest`` and
    ``deployed_segment_digests`` are the deployed version's record (parties serve only these).
    """
    record = get_contract(session, contract_id)
    require_member(session, caller, record)
    state = effective_state(record, now)
    version = None
    if record.active_version is not None:
        version = version_of(session, record.id, record.active_version)
    active = (
        state is ContractState.ACTIVE
        and version is not None
        and version.valid_from <= now < version.valid_until
    )
    members = parties_of(session, version.id) if version is not None else ()
    entry = None if party is None else next((p for p in members if p.name == party), None)
    job = None if job_id is None else session.get(Job, job_id)
    job_ok = None if job_id is None else job is not None and job.contract_id == record.id
    deployed = session.execute(
        select(
            ModelVersion.version,
            ModelVersion.job_id,
            ModelVersion.model_digest,
            ModelVersion.segment_digests,
        ).where(ModelVersion.contract_id == record.id, ModelVersion.status == ModelStatus.DEPLOYED)
    ).first()
    return CheckResult(
        contract_id=record.id,
        state=state,
        active=active,
        contract_version=record.active_version,
        digest=version.digest if version is not None else None,
        valid_until=record.valid_until,
        party=party,
        role=entry.role if entry is not None else None,
        org_id=entry.org_id if entry is not None else None,
        role_ok=None if role is None or party is None else entry is not None and entry.role is role,
        job_id=job_id,
        job_ok=job_ok,
        job_status=job.status.value if job is not None and job_ok else None,
        parties=tuple(PartyEntry(p.name, p.role, p.org_id) for p in members),
        protection=None if version is None else wire_protection(version.document),
        deployed_model_version=deployed.version if deployed is not None else None,
        deployed_job_id=deployed.job_id if deployed is not None else None,
        training_deadline=version.training_deadline if version is not None else None,
        job_locked=None if not job_ok else job_locked(session, job_id),
        deployed_model_digest=deployed.model_digest if deployed is not None else None,
        deployed_segment_digests=deployed.segment_digests if deployed is not None else None,
    )


def job_locked(session: Session, job_id: str | None) -> bool:
    """Whether ``job_id`` has a model version that is approved (by anyone) or was deployed."""
    if job_id is None:
        return False
    model = session.execute(
        select(ModelVersion.id, ModelVersion.deployed_at).where(ModelVersion.job_id == job_id)
    ).first()
    if model is None:
        return False
    if model.deployed_at is not None:
        return True
    approved = session.scalar(
        select(ModelApproval.id).where(ModelApproval.model_version_id == model.id).limit(1)
    )
    return approved is not None


def wire_protection(document: str) -> dict[str, Any] | None:
    """The ``protection`` of a stored canonical document as ``messages.ProtectionSpec`` JSON;
    None (and a warning) if this registry's contract language cannot read it."""
    try:
        section = upgrade_stored(json.loads(document)).get("protection")
        return _PROTECTION.validate_python(section).to_wire()
    except (ValueError, AttributeError) as exc:  # not JSON, no mapping, or invalid
        log.warning("cannot read the protection of a stored contract document: %s", exc)
        return None

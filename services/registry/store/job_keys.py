"""Key fingerprints recorded with a job.

A feature party generates its CKKS keys for a job when the label party prepares it there, after
the job was created, and records the SHA-256 fingerprint of its public key bundle here. The label
party reads it back (with the job) and refuses a bundle whose fingerprint differs. A fingerprint
is written once: the same one again changes nothing, another one is a conflict.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.protocol.errors import Conflict, ErrorCode, Forbidden, NotFound
from services.registry.auth import Caller
from services.registry.models_contracts import RUNNING_JOB_STATUSES, Job
from services.registry.store import audit
from services.registry.store.contracts import get_contract, parties_of, require_live, version_of
from services.registry.store.jobs import get_job

PARTY_CALL = "party:call"
"""The scope parties hold to act under a contract; it covers recording their keys."""


def register_key(
    session: Session,
    caller: Caller,
    job_id: str,
    party: str,
    fingerprint: str,
    *,
    now: datetime,
) -> Job:
    """Record ``fingerprint`` as ``party``'s key for the job, for the organisation playing
    ``party`` in the version the job runs under, while the job runs and its contract is neither
    terminated nor expired."""
    caller.require_scope(PARTY_CALL)
    contract_id = session.scalar(select(Job.contract_id).where(Job.id == job_id))
    if contract_id is None:
        raise NotFound(f"no job {job_id}", detail={"job_id": job_id})
    record = get_contract(session, contract_id, for_update=True)
    job = get_job(session, caller, job_id, for_update=True)
    version = version_of(session, record.id, job.contract_version)
    entry = next((p for p in parties_of(session, version.id) if p.name == party), None)
    if entry is None:
        raise NotFound(
            f"version {version.version} of contract {record.id} has no party {party!r}",
            detail={"party": party},
        )
    if caller.is_admin or caller.org_id != entry.org_id:
        raise Forbidden(
            f"only the organisation of party {party!r} records its key",
            detail={"party": party},
        )
    require_live(session, record, now)
    if job.status not in RUNNING_JOB_STATUSES:
        raise Conflict(
            f"job {job.id} is {job.status.value}: its keys are final",
            code=ErrorCode.INVALID_TRANSITION,
            detail={"status": job.status.value},
        )
    held = job.key_fingerprints.get(party)
    if held == fingerprint:
        return job
    if held is not None:
        raise Conflict(
            f"job {job.id} already holds another key fingerprint for {party!r}",
            code=ErrorCode.KEY_CONFLICT,
            detail={"party": party, "fingerprint": held},
        )
    job.key_fingerprints = {**job.key_fingerprints, party: fingerprint}
    job.updated_at = now
    session.flush()
    audit.append(
        session,
        actor=caller.subject,
        action="job.key_registered",
        subject=f"job:{job.id}",
        payload={"party": party, "fingerprint": fingerprint},
    )
    return job

"""Jobs as people follow them: the jobs a caller may see, and stopping one.

A job is stopped by its label party's organisation (scope ``jobs:run``), the contract's owner
(``contracts:write``) or an operator: it becomes ``cancelled`` with the reason, and the label party
stops training at its next progress report (the registry refuses reports about a final job).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from services.protocol.errors import Conflict, ErrorCode, Forbidden
from services.registry.auth import Caller
from services.registry.models_contracts import (
    RUNNING_JOB_STATUSES,
    ContractParty,
    ContractRecord,
    ContractVersion,
    Job,
    JobStatus,
)
from services.registry.store import audit
from services.registry.store.contracts import (
    CONTRACTS_WRITE,
    JOBS_RUN,
    get_contract,
    require_member,
)
from services.registry.store.jobs import get_job


def list_jobs(
    session: Session,
    caller: Caller,
    *,
    contract_id: str | None = None,
    status: JobStatus | None = None,
    limit: int = 100,
) -> Sequence[Job]:
    """Jobs of the contracts the caller's organisation owns or is a party to (operators: all),
    newest first; only one contract's with ``contract_id``, only those in ``status``."""
    stmt = select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)
    if contract_id is not None:
        require_member(session, caller, get_contract(session, contract_id))
        stmt = stmt.where(Job.contract_id == contract_id)
    elif not caller.is_admin:
        as_party = (
            select(ContractVersion.contract_id)
            .join(ContractParty, ContractParty.version_id == ContractVersion.id)
            .where(ContractParty.org_id == caller.org_id)
        )
        owned = select(ContractRecord.id).where(ContractRecord.owner_org_id == caller.org_id)
        stmt = stmt.where(or_(Job.contract_id.in_(owned), Job.contract_id.in_(as_party)))
    if status is not None:
        stmt = stmt.where(Job.status == status)
    return session.scalars(stmt).all()


def cancel(session: Session, caller: Caller, job_id: str, *, reason: str, now: datetime) -> Job:
    """Stop a running job: ``cancelled``, with ``reason`` as its error. A final job is a 409
    ``invalid_transition``."""
    job = get_job(session, caller, job_id, for_update=True)
    record = get_contract(session, job.contract_id)
    if not caller.is_admin:
        if caller.org_id == job.label_org_id and JOBS_RUN in caller.scopes:
            pass
        elif caller.org_id == record.owner_org_id and CONTRACTS_WRITE in caller.scopes:
            pass
        else:
            raise Forbidden(
                "only the job's label party (jobs:run), the contract's owner (contracts:write) "
                "or an operator may stop a job",
                detail={"label_org_id": job.label_org_id, "owner_org_id": record.owner_org_id},
            )
    if job.status not in RUNNING_JOB_STATUSES:
        raise Conflict(
            f"job {job.id} is {job.status.value}: that is final",
            code=ErrorCode.INVALID_TRANSITION,
            detail={"status": job.status.value},
        )
    previous = job.status
    job.status, job.error, job.failed_party = JobStatus.CANCELLED, reason, None
    job.finished_at = job.updated_at = now
    session.flush()
    audit.append(
        session,
        actor=caller.subject,
        action="job.status_changed",
        subject=f"job:{job.id}",
        payload={"from": previous.value, "to": job.status.value, "error": reason},
    )
    return job

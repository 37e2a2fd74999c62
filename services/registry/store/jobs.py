"""Training jobs and the model versions they produce.

The label party of the version in force creates a job under an active contract, inside its
validity and before its training deadline; one job runs per contract at a time (the contract
language has no field allowing more). The label party reports status, progress and metrics, and
records the model version a finished job produced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from contracts.job import job_terms
from contracts.loader import validate_stored
from services.protocol.errors import Conflict, ErrorCode, Forbidden, NotFound, Unprocessable
from services.protocol.messages import JobTerms, ModelSpec
from services.protocol.terms import model_digest, terms_digest
from services.registry.auth import Caller
from services.registry.models_contracts import (
    RUNNING_JOB_STATUSES,
    ContractState,
    ContractVersion,
    Job,
    JobStatus,
    ModelStatus,
    ModelVersion,
    PartyRole,
)
from services.registry.store import audit
from services.registry.store.contracts import (
    JOBS_RUN,
    get_contract,
    parties_of,
    require_live,
    require_member,
    transition_error,
    version_of,
)

_RANK = {
    JobStatus.CREATED: 0,
    JobStatus.ALIGNING: 1,
    JobStatus.TRAINING: 2,
    JobStatus.FINISHED: 3,
    JobStatus.FAILED: 3,
    JobStatus.CANCELLED: 3,
}


MAX_HISTORY = 1000
"""Epochs a job's history keeps (the newest)."""


def _not_running(status: JobStatus) -> bool:
    return status not in RUNNING_JOB_STATUSES


def terms_of(version: ContractVersion) -> JobTerms:
    """The job terms a stored contract version fixes (the parties derive the same)."""
    return job_terms(validate_stored(json.loads(version.document)))


def create_job(
    session: Session,
    caller: Caller,
    contract_id: str,
    *,
    key_fingerprints: dict[str, str],
    now: datetime,
) -> Job:
    """A new job under the contract's version in force, created by its label party."""
    caller.require_scope(JOBS_RUN)
    record = get_contract(session, contract_id, for_update=True)
    if record.active_version is None:
        require_member(session, caller, record)
        require_live(session, record, now)
        raise transition_error(record, "run a job under", "active")
    version = version_of(session, record.id, record.active_version)
    label = next(p for p in parties_of(session, version.id) if p.role is PartyRole.LABEL)
    if caller.is_admin or caller.org_id != label.org_id:
        raise Forbidden(
            f"only the label party ({label.name!r}) creates jobs under this contract",
            detail={"label_party": label.name},
        )
    require_live(session, record, now)
    if record.state is not ContractState.ACTIVE:
        raise transition_error(record, "run a job under", "active")
    if not version.valid_from <= now < version.valid_until:
        raise Conflict(
            f"the contract is valid from {version.valid_from.isoformat()}",
            code=ErrorCode.INVALID_TRANSITION,
        )
    if now > version.training_deadline:
        raise Conflict(
            f"the training deadline {version.training_deadline.isoformat()} has passed",
            code=ErrorCode.INVALID_TRANSITION,
        )
    running = session.scalar(
        select(Job.id).where(Job.contract_id == record.id, Job.status.in_(RUNNING_JOB_STATUSES))
    )
    if running is not None:
        raise Conflict(
            f"job {running} is still running under this contract",
            code=ErrorCode.JOB_EXISTS,
            detail={"job_id": running},
        )
    job = Job(
        contract_id=record.id,
        contract_version=version.version,
        spec_digest=terms_digest(terms_of(version)),
        label_party=label.name,
        label_org_id=label.org_id,
        status=JobStatus.CREATED,
        progress=0.0,
        metrics={},
        key_fingerprints=dict(key_fingerprints),
        created_by=caller.subject,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    session.flush()
    audit.append(
        session,
        actor=caller.subject,
        action="job.created",
        subject=f"job:{job.id}",
        payload={
            "contract_id": record.id,
            "contract_version": version.version,
            "spec_digest": job.spec_digest,
            "key_fingerprints": job.key_fingerprints,
        },
    )
    return job


def get_job(session: Session, caller: Caller, job_id: str, *, for_update: bool = False) -> Job:
    """The job, for the contract's owner, parties and operators; :class:`NotFound` otherwise."""
    stmt = select(Job).where(Job.id == job_id)
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    job = session.scalar(stmt)
    if job is None:
        raise NotFound(f"no job {job_id}", detail={"job_id": job_id})
    require_member(session, caller, get_contract(session, job.contract_id))
    return job


def _require_label(caller: Caller, job: Job) -> None:
    caller.require_scope(JOBS_RUN)
    if caller.is_admin or caller.org_id != job.label_org_id:
        raise Forbidden(f"only the label party ({job.label_party!r}) reports on this job")


def report(
    session: Session,
    caller: Caller,
    job_id: str,
    *,
    status: JobStatus | None,
    progress: float | None,
    metrics: dict[str, Any] | None,
    now: datetime,
    epoch: dict[str, Any] | None = None,
    error: str | None = None,
    failed_party: str | None = None,
) -> Job:
    """Update a job's status (forward only), progress and metrics, append a finished ``epoch``
    to its history (once per epoch number: a repeated report changes nothing), and record why
    a failed or cancelled job ended and the party at fault (a party of the job's contract
    version, else 422). A job that is finished, failed or cancelled changes no more; a job
    moves on to aligning or training only while its contract is active."""
    get_contract(session, _contract_of(session, job_id), for_update=True)
    job = get_job(session, caller, job_id, for_update=True)
    _require_label(caller, job)
    if _not_running(job.status):
        raise Conflict(
            f"job {job.id} is {job.status.value}: that is final",
            code=ErrorCode.INVALID_TRANSITION,
            detail={"status": job.status.value},
        )
    new = status if status is not None else job.status
    if _RANK[new] < _RANK[job.status]:
        raise Conflict(
            f"job {job.id} cannot go back from {job.status.value} to {new.value}",
            code=ErrorCode.INVALID_TRANSITION,
            detail={"status": job.status.value},
        )
    if new is not job.status and not _not_running(new):
        record = get_contract(session, job.contract_id)
        require_live(session, record, now)
        if record.state is not ContractState.ACTIVE:
            raise transition_error(record, f"move a job to {new.value} under", "active")
    if failed_party is not None:
        stored = version_of(session, job.contract_id, job.contract_version)
        parties = {p.name for p in parties_of(session, stored.id)}
        if failed_party not in parties:
            raise Unprocessable(
                f"failed_party {failed_party!r} is no party of the job's contract version",
                detail={"failed_party": failed_party, "parties": sorted(parties)},
            )
    previous = job.status
    job.status = new
    if progress is not None:
        job.progress = progress
    if metrics is not None:
        job.metrics = dict(metrics)
    if epoch is not None:
        history = list(job.history or [])
        if not history or int(history[-1]["epoch"]) < int(epoch["epoch"]):
            job.history = [*history, dict(epoch)][-MAX_HISTORY:]
    if error is not None or failed_party is not None:
        job.error, job.failed_party = error, failed_party
    if new is JobStatus.FINISHED:
        job.progress = 1.0
    if _not_running(new):
        job.finished_at = now
    job.updated_at = now
    session.flush()
    if new is not previous:
        audit.append(
            session,
            actor=caller.subject,
            action="job.status_changed",
            subject=f"job:{job.id}",
            payload={
                "from": previous.value,
                "to": new.value,
                "metrics": job.metrics,
                **({"error": job.error, "failed_party": job.failed_party} if job.error else {}),
            },
        )
    return job


def _contract_of(session: Session, job_id: str) -> str:
    contract_id = session.scalar(select(Job.contract_id).where(Job.id == job_id))
    if contract_id is None:
        raise NotFound(f"no job {job_id}", detail={"job_id": job_id})
    return contract_id


def record_model_version(
    session: Session,
    caller: Caller,
    job_id: str,
    *,
    metrics: dict[str, Any],
    artifact_digests: dict[str, str],
    spec_digest: str,
    segment_digests: Mapping[str, str],
    now: datetime,
) -> ModelVersion:
    """Record the model a finished job produced, as the contract's next model version (not
    under a terminated or expired contract).

    The version says what it is: the job's contract version, the task and each party's columns
    that version fixes, the job's spec digest (``spec_digest`` must be it: 409 ``spec_mismatch``
    otherwise) and a segment digest for exactly the parties with a segment (422 otherwise),
    bound together by the model digest."""
    record = get_contract(session, _contract_of(session, job_id), for_update=True)
    job = get_job(session, caller, job_id)
    _require_label(caller, job)
    require_live(session, record, now)
    if job.status is not JobStatus.FINISHED:
        raise Conflict(
            f"job {job.id} is {job.status.value}: only a finished job has a model",
            code=ErrorCode.INVALID_TRANSITION,
            detail={"status": job.status.value},
        )
    done = session.scalar(select(ModelVersion.version).where(ModelVersion.job_id == job.id))
    if done is not None:
        raise Conflict(f"job {job.id} already produced model version {done}")
    terms = terms_of(version_of(session, record.id, job.contract_version))
    _require_identity(job, terms, spec_digest, segment_digests)
    latest = session.scalar(
        select(func.max(ModelVersion.version)).where(ModelVersion.contract_id == record.id)
    )
    model = ModelVersion(
        job_id=job.id,
        contract_id=record.id,
        version=(latest or 0) + 1,
        metrics=dict(metrics),
        artifact_digests=dict(artifact_digests),
        contract_version=job.contract_version,
        task=terms.task.value,
        columns=dict(terms.columns),
        spec_digest=spec_digest,
        segment_digests=dict(segment_digests),
        model_digest=model_digest(spec_digest, segment_digests),
        status=ModelStatus.TRAINED,
        created_by=caller.subject,
        created_at=now,
    )
    session.add(model)
    session.flush()
    audit.append(
        session,
        actor=caller.subject,
        action="model_version.recorded",
        subject=f"contract:{record.id}",
        payload={
            "model_version": model.version,
            "job_id": job.id,
            "contract_version": job.contract_version,
            "metrics": model.metrics,
            "artifact_digests": model.artifact_digests,
            "spec_digest": model.spec_digest,
            "segment_digests": model.segment_digests,
            "model_digest": model.model_digest,
        },
    )
    return model


def _require_identity(
    job: Job, terms: JobTerms, spec_digest: str, segment_digests: Mapping[str, str]
) -> None:
    """The reported spec digest must be the job's, and the segment digests must name exactly
    the parties with a segment (the label party always has one: the top)."""
    want = job.spec_digest or terms_digest(terms)
    if spec_digest != want:
        raise Conflict(
            f"job {job.id} trained under spec digest {want}; the model reports {spec_digest}",
            code=ErrorCode.SPEC_MISMATCH,
            detail={"spec_digest": want, "reported": spec_digest},
        )
    parties = {*terms.columns, *terms.key_columns, terms.label_party}
    if isinstance(terms.model, ModelSpec):
        parties |= set(terms.model.bottom)
    if set(segment_digests) != parties:
        raise Unprocessable(
            f"segment_digests must name exactly the parties with a segment: "
            f"{', '.join(sorted(parties))}",
            detail={
                "missing": sorted(parties - set(segment_digests)),
                "unknown": sorted(set(segment_digests) - parties),
            },
        )


def model_versions(session: Session, caller: Caller, contract_id: str) -> Sequence[ModelVersion]:
    """A contract's model versions, oldest first."""
    require_member(session, caller, get_contract(session, contract_id))
    stmt = select(ModelVersion).where(ModelVersion.contract_id == contract_id)
    return session.scalars(stmt.order_by(ModelVersion.version)).all()


def report_quality(
    session: Session,
    caller: Caller,
    job_id: str,
    *,
    status: str,
    quality: dict[str, Any],
    now: datetime,
) -> tuple[ModelVersion, bool]:
    """Keep the label party's report of the live quality of the model version job ``job_id``
    produced (its label party, scope ``jobs:run``; not under a terminated or expired contract);
    a change of status is an audit event
    (``model.quality_alert`` or ``model.quality_ok``) the parties and the owner read. Answers
    the model version and whether its status changed."""
    record = get_contract(session, _contract_of(session, job_id))
    job = get_job(session, caller, job_id)
    _require_label(caller, job)
    require_live(session, record, now)
    model = session.scalar(select(ModelVersion).where(ModelVersion.job_id == job.id))
    if model is None:
        raise NotFound(
            f"job {job.id} has no model version",
            code=ErrorCode.NOT_FOUND,
            detail={"job_id": job.id},
        )
    changed = model.quality_status != status
    if changed:
        audit.append(
            session,
            actor=caller.subject,
            action=f"model.quality_{status}",
            subject=f"{model.contract_id}/{model.version}",
            payload={"alerts": [str(a) for a in quality.get("alerts", [])][:20]},
        )
    model.quality = quality
    model.quality_status = status
    model.quality_at = now
    return model, changed

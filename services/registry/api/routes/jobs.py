"""Training jobs under active contracts, their progress, and the model versions they produce."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Path, Query, status

from services.protocol.messages import PartyName
from services.registry import webhooks
from services.registry.api.deps import JSON_BODY, CallerDep, SessionDep, VaultDep, WorkDep
from services.registry.api.schemas_contracts import (
    JobCancel,
    JobCreate,
    JobOut,
    JobReport,
    KeyRegistration,
    ModelVersionCreate,
    job_out,
)
from services.registry.api.schemas_deployment import (
    ModelVersionOut,
    QualityReport,
    model_version_out,
)
from services.registry.models import utcnow
from services.registry.models_contracts import JobStatus
from services.registry.store import deployment, job_control, job_keys, jobs

router = APIRouter(tags=["jobs"])

JobIdPath = Annotated[str, Path(min_length=1, max_length=36, description="Job id.")]
PartyPath = Annotated[PartyName, Path(description="A party's name in the job's contract.")]


@router.post("/v1/jobs", status_code=status.HTTP_201_CREATED, dependencies=[JSON_BODY])
def create_job(session: WorkDep, caller: CallerDep, body: JobCreate) -> JobOut:
    """Create a training job under an active contract (its label party, scope ``jobs:run``).

    The contract must be active, inside its validity period and before its training deadline,
    with no other job running (409 ``job_exists``). The job runs under the version in force.
    """
    job = jobs.create_job(
        session,
        caller,
        body.contract_id,
        key_fingerprints=body.key_fingerprints,
        now=utcnow(),
    )
    return job_out(job)


@router.get("/v1/jobs")
def list_jobs(
    session: SessionDep,
    caller: CallerDep,
    contract_id: Annotated[
        str | None, Query(max_length=36, description="Only this contract's jobs.")
    ] = None,
    job_status: Annotated[
        JobStatus | None, Query(alias="status", description="Only jobs in this status.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[JobOut]:
    """Jobs of the contracts the caller's organisation owns or is a party to (operators: all),
    newest first, with their status, epoch history and, once failed, the reason and the party
    at fault."""
    found = job_control.list_jobs(
        session, caller, contract_id=contract_id, status=job_status, limit=limit
    )
    return [job_out(j) for j in found]


@router.post("/v1/jobs/{job_id}/cancel", dependencies=[JSON_BODY])
def cancel_job(session: WorkDep, caller: CallerDep, job_id: JobIdPath, body: JobCancel) -> JobOut:
    """Stop a running job (its label party's organisation with ``jobs:run``, the contract's
    owner with ``contracts:write``, or an operator): it becomes ``cancelled`` with the reason.
    The label party stops training at its next progress report. A final job is a 409
    ``invalid_transition``."""
    return job_out(job_control.cancel(session, caller, job_id, reason=body.reason, now=utcnow()))


@router.get("/v1/jobs/{job_id}")
def get_job(session: SessionDep, caller: CallerDep, job_id: JobIdPath) -> JobOut:
    """A job (the contract's owner, its parties, operators)."""
    return job_out(jobs.get_job(session, caller, job_id))


@router.put("/v1/jobs/{job_id}/keys/{party}", dependencies=[JSON_BODY])
def register_key(
    session: WorkDep,
    caller: CallerDep,
    job_id: JobIdPath,
    party: PartyPath,
    body: KeyRegistration,
) -> JobOut:
    """Record the fingerprint of a party's public key bundle for a job (the organisation that
    plays ``party`` in the job's contract version, scope ``party:call``).

    A feature party calls this once it has generated its keys for the job; the label party
    reads the job and refuses a key bundle whose fingerprint differs. Write-once: the same
    fingerprint again is answered 200 and changes nothing, another is a 409 ``key_conflict``.
    Only while the job runs (409 ``invalid_transition`` once it is finished, failed or
    cancelled, or its contract terminated or expired). An unknown party is a 404.
    """
    job = job_keys.register_key(session, caller, job_id, party, body.fingerprint, now=utcnow())
    return job_out(job)


@router.post("/v1/jobs/{job_id}/progress", dependencies=[JSON_BODY])
def report_progress(
    session: WorkDep, caller: CallerDep, job_id: JobIdPath, body: JobReport
) -> JobOut:
    """Report a job's status, progress (0 to 1) and latest metrics (its label party, scope
    ``jobs:run``).

    Status moves forward only: created, aligning, training, then finished, failed or
    cancelled, which are final. Moving on to aligning or training needs an active contract.
    """
    job = jobs.report(
        session,
        caller,
        job_id,
        status=body.status,
        progress=body.progress,
        metrics=body.metrics,
        now=utcnow(),
        epoch=None if body.epoch is None else body.epoch.model_dump(),
        error=body.error,
        failed_party=body.failed_party,
    )
    return job_out(job)


@router.post(
    "/v1/jobs/{job_id}/model-versions",
    status_code=status.HTTP_201_CREATED,
    dependencies=[JSON_BODY],
)
def record_model_version(
    session: WorkDep, caller: CallerDep, job_id: JobIdPath, body: ModelVersionCreate
) -> ModelVersionOut:
    """Record the model a finished job produced, with its metrics, artifact digests, spec digest
    and every party's segment digest (its label party, scope ``jobs:run``), while the contract
    is neither terminated nor expired (409 ``invalid_transition``). Model versions are numbered
    per contract and say what they are: contract version, task, columns (from the job's
    contract version), spec digest (409 ``spec_mismatch`` unless it is the job's), segment
    digests (exactly the parties with a segment, else 422) and the model digest."""
    model = jobs.record_model_version(
        session,
        caller,
        job_id,
        metrics=body.metrics,
        artifact_digests=body.artifact_digests,
        spec_digest=body.spec_digest,
        segment_digests=body.segment_digests,
        now=utcnow(),
    )
    return model_version_out(model, [])


@router.put("/v1/jobs/{job_id}/quality", dependencies=[JSON_BODY])
def report_quality(
    session: WorkDep,
    caller: CallerDep,
    vault: VaultDep,
    background: BackgroundTasks,
    job_id: JobIdPath,
    body: QualityReport,
) -> ModelVersionOut:
    """Keep the live quality of the model version this job produced, as its label party reports
    it (scope ``jobs:run``): status ``ok`` or ``alert`` under the contract's monitoring
    thresholds, the live metric, every party's drift scores. The model version answers it
    (``quality_status``, ``quality``); a change of status is an audit event
    (``model.quality_alert`` / ``model.quality_ok``), POSTed signed to the webhook of every
    organisation of the contract that registered one (after this answer, with retries)."""
    now = utcnow()
    model, changed = jobs.report_quality(
        session, caller, job_id, status=body.status, quality=body.model_dump(mode="json"), now=now
    )
    if changed:
        payload = {
            "model_version": model.version,
            "job_id": job_id,
            "status": body.status,
            "alerts": [str(a) for a in body.alerts][:20],
        }
        event = f"model.quality_{body.status}"
        deliveries = webhooks.contract_event(session, vault, model.contract_id, event, payload, now)
        if deliveries:  # sent once the change committed (the unit of work ends first)
            background.add_task(webhooks.deliver, deliveries)
    return model_version_out(model, deployment.approvals_of(session, [model])[model.id])

"""Training jobs under active contracts, their progress, and the model versions they produce."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from services.protocol.messages import PartyName
from services.registry.api.deps import JSON_BODY, CallerDep, SessionDep, WorkDep
from services.registry.api.schemas_contracts import (
    JobCreate,
    JobOut,
    JobReport,
    KeyRegistration,
    ModelVersionCreate,
)
from services.registry.api.schemas_deployment import ModelVersionOut, model_version_out
from services.registry.models import utcnow
from services.registry.store import job_keys, jobs

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
    return JobOut.model_validate(job)


@router.get("/v1/jobs/{job_id}")
def get_job(session: SessionDep, caller: CallerDep, job_id: JobIdPath) -> JobOut:
    """A job (the contract's owner, its parties, operators)."""
    return JobOut.model_validate(jobs.get_job(session, caller, job_id))


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
    return JobOut.model_validate(job)


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
    )
    return JobOut.model_validate(job)


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

"""Request and answer bodies of the contract and job endpoints.

Contract documents themselves are not modelled here: they are the contract language
(:mod:`contracts`), sent as JSON or YAML and validated by it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import Field, StringConstraints, model_validator

from services.protocol.messages import PartyName
from services.protocol.registry_contracts import (
    CheckOut as CheckOut,
)
from services.protocol.registry_contracts import (
    CheckParty as CheckParty,
)
from services.protocol.registry_contracts import (
    ContractOut as ContractOut,
)
from services.protocol.registry_contracts import (
    ContractSummary as ContractSummary,
)
from services.protocol.registry_contracts import (
    EpochOut as EpochOut,
)
from services.protocol.registry_contracts import (
    Expired as Expired,
)
from services.protocol.registry_contracts import (
    JobOut as JobOut,
)
from services.protocol.registry_contracts import (
    PartyOut as PartyOut,
)
from services.protocol.registry_contracts import (
    SignatureOut as SignatureOut,
)
from services.protocol.registry_contracts import (
    VersionOut as VersionOut,
)
from services.registry.api.schemas import Note, RequestBody
from services.registry.models_contracts import (
    ContractRecord,
    Decision,
    Job,
    JobStatus,
)
from services.registry.store.contract_check import CheckResult
from services.registry.store.contracts import VersionView, effective_state

Sha256Hex = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
MetricName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.:/-]{0,63}$")]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Metrics = Annotated[dict[MetricName, FiniteFloat], Field(max_length=64)]
ArtifactName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")]
Fingerprint = Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Signing(RequestBody):
    """A party's answer to the proposed version, bound to the digest it reviewed."""

    party: PartyName = Field(description="The party (contract name) signing.")
    decision: Decision
    digest: Sha256Hex = Field(description="The proposed version's digest, as reviewed.")
    reason: Note | None = None


class Reason(RequestBody):
    """Why (kept in the audit log)."""

    reason: Note


class JobCreate(RequestBody):
    """A training job under an active contract."""

    contract_id: Annotated[str, Field(min_length=1, max_length=36)]
    key_fingerprints: Annotated[dict[PartyName, Fingerprint], Field(max_length=32)] = Field(
        default_factory=dict,
        description="Key fingerprints known at creation, by party; each is write-once. Feature "
        "parties usually record theirs later with `PUT /v1/jobs/{id}/keys/{party}`.",
    )


class KeyRegistration(RequestBody):
    """A party's key fingerprint for a job."""

    fingerprint: Sha256Hex = Field(
        description="SHA-256 (64 lower-case hex digits) of the party's public CKKS key bundle "
        "for this job."
    )


class EpochReport(RequestBody):
    """One finished epoch."""

    epoch: Annotated[int, Field(ge=0, le=100_000)]
    train_loss: FiniteFloat
    validation: Metrics
    seconds: Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class JobReport(RequestBody):
    """Progress of a job: any of a new status, a progress fraction, the latest metrics, a
    finished epoch; with status ``failed`` (or ``cancelled``), why and the party at fault."""

    status: JobStatus | None = None
    progress: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    metrics: Metrics | None = None
    epoch: EpochReport | None = Field(
        default=None, description="A finished epoch, appended to the job's history once."
    )
    error: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = Field(
        default=None, description="Why the job failed or was cancelled."
    )
    failed_party: PartyName | None = Field(
        default=None, description="The contract party at fault for the failure."
    )

    @model_validator(mode="after")
    def _something(self) -> JobReport:
        if all(
            v is None for v in (self.status, self.progress, self.metrics, self.epoch, self.error)
        ):
            raise ValueError("send at least one of status, progress, metrics, epoch, error")
        ending = self.status in (JobStatus.FAILED, JobStatus.CANCELLED)
        if (self.error is not None or self.failed_party is not None) and not ending:
            raise ValueError("error and failed_party come with status failed or cancelled")
        return self


class JobCancel(RequestBody):
    """Why a job is stopped (kept with the job and in the audit log)."""

    reason: Note


class ModelVersionCreate(RequestBody):
    """The model a finished job produced."""

    metrics: Metrics
    artifact_digests: Annotated[dict[ArtifactName, Sha256Hex], Field(min_length=1, max_length=64)]
    spec_digest: Sha256Hex = Field(description="The job's spec digest, as the party trained it.")
    segment_digests: Annotated[dict[PartyName, Sha256Hex], Field(min_length=1, max_length=17)] = (
        Field(
            description="Each party's segment digest (SHA-256 of the weights that serve): "
            "exactly the parties with a segment, the label party included."
        )
    )


def version_out(view: VersionView) -> VersionOut:
    """The wire view of a stored version."""
    v = view.version
    return VersionOut(
        version=v.version,
        state=v.state,
        digest=v.digest,
        document=view.document,
        parties=[PartyOut.model_validate(p) for p in view.parties],
        signatures=[SignatureOut.model_validate(s) for s in view.signatures],
        valid_from=v.valid_from,
        valid_until=v.valid_until,
        training_deadline=v.training_deadline,
        created_by=v.created_by,
        created_at=v.created_at,
        proposed_at=v.proposed_at,
        decided_at=v.decided_at,
    )


def _summary(record: ContractRecord, now: datetime) -> dict[str, Any]:
    return {
        "id": record.id,
        "title": record.title,
        "owner_org_id": record.owner_org_id,
        "state": effective_state(record, now),
        "head_version": record.head_version,
        "active_version": record.active_version,
        "valid_until": record.valid_until,
        "suspended_by": record.suspended_by,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
    }


def contract_summary(record: ContractRecord, now: datetime) -> ContractSummary:
    """The wire view of a stored contract (``state`` as of ``now``: expiry included)."""
    return ContractSummary(**_summary(record, now))


def contract_out(record: ContractRecord, views: list[VersionView], now: datetime) -> ContractOut:
    """The wire view of a contract and its versions."""
    return ContractOut(**_summary(record, now), versions=[version_out(v) for v in views])


def check_out(result: CheckResult, now: datetime) -> CheckOut:
    """The wire view of a check."""
    fields = {k: v for k, v in vars(result).items() if k != "parties"}
    parties = [CheckParty(name=p.name, role=p.role, org_id=p.org_id) for p in result.parties]
    return CheckOut(**fields, parties=parties, checked_at=now)


def job_out(job: Job) -> JobOut:
    """The wire view of a stored job (its history empty when none was recorded)."""
    return JobOut(
        id=job.id,
        contract_id=job.contract_id,
        contract_version=job.contract_version,
        label_party=job.label_party,
        label_org_id=job.label_org_id,
        status=job.status,
        progress=job.progress,
        metrics=job.metrics,
        key_fingerprints=job.key_fingerprints,
        spec_digest=job.spec_digest,
        created_by=job.created_by,
        created_at=job.created_at,
        updated_at=job.updated_at,
        finished_at=job.finished_at,
        history=[EpochOut.model_validate(e) for e in job.history or []],
        error=job.error,
        failed_party=job.failed_party,
    )

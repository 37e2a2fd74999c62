"""Request and answer bodies of the contract and job endpoints.

Contract documents themselves are not modelled here: they are the contract language
(:mod:`contracts`), sent as JSON or YAML and validated by it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from services.protocol.messages import PartyName
from services.registry.api.schemas import Note, RequestBody
from services.registry.models_contracts import (
    ContractRecord,
    ContractState,
    Decision,
    JobStatus,
    PartyRole,
    VersionState,
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


class PartyOut(BaseModel):
    """A party of a version and the organisation it resolved to."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    org_id: str
    role: PartyRole


class SignatureOut(BaseModel):
    """A recorded decision."""

    model_config = ConfigDict(from_attributes=True)

    party: str
    org_id: str
    decision: Decision
    digest: str
    signed_by: str
    reason: str | None
    at: datetime


class VersionOut(BaseModel):
    """One text of the contract, its parties and their signatures."""

    version: int
    state: VersionState
    digest: str = Field(description="SHA-256 of the canonical JSON document: what parties sign.")
    document: dict[str, Any]
    parties: list[PartyOut]
    signatures: list[SignatureOut]
    valid_from: datetime
    valid_until: datetime
    training_deadline: datetime
    created_by: str
    created_at: datetime
    proposed_at: datetime | None
    decided_at: datetime | None

    @classmethod
    def of(cls, view: VersionView) -> VersionOut:
        """The wire view of a stored version."""
        v = view.version
        return cls(
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


class ContractSummary(BaseModel):
    """A contract without its versions. ``state`` is as of the answer (expiry included)."""

    id: str
    title: str
    owner_org_id: str
    state: ContractState
    head_version: int = Field(description="The newest version.")
    active_version: int | None = Field(description="The agreed version in force, if any.")
    valid_until: datetime | None
    suspended_by: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, record: ContractRecord, now: datetime) -> ContractSummary:
        """The wire view of a stored contract."""
        return cls(**_summary(record, now))


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


class ContractOut(ContractSummary):
    """A contract with every version, oldest first."""

    versions: list[VersionOut]

    @classmethod
    def full(cls, record: ContractRecord, views: list[VersionView], now: datetime) -> ContractOut:
        """The wire view of a contract and its versions."""
        return cls(**_summary(record, now), versions=[VersionOut.of(v) for v in views])


class CheckParty(BaseModel):
    """A party of a contract in a check answer."""

    name: str
    role: PartyRole
    org_id: str


class CheckOut(BaseModel):
    """Whether a contract is in force for a party, in a role, for a job."""

    contract_id: str
    state: ContractState
    active: bool = Field(description="Active, and inside its validity period now.")
    contract_version: int | None
    digest: str | None
    valid_until: datetime | None
    party: str | None
    role: PartyRole | None = Field(description="The party's role in the version in force.")
    org_id: str | None = Field(description="The organisation of the party.")
    role_ok: bool | None = Field(description="The party has the role asked for (if asked).")
    job_id: str | None
    job_ok: bool | None = Field(description="The job belongs to this contract (if asked).")
    job_status: JobStatus | None
    parties: list[CheckParty] = Field(
        default_factory=list,
        description="Every party of the version in force, so a called party can tell the "
        "caller's role from the organisation in its token.",
    )
    protection: dict[str, Any] | None = Field(
        default=None,
        description="How the version in force protects the cut layer, as the protocol's "
        "`ProtectionSpec` (`mode`, `ckks`, `defence`); null without a version in force.",
    )
    deployed_model_version: int | None = Field(
        default=None,
        description="The contract's deployed model version (the one serving predictions); "
        "null if none is.",
    )
    deployed_job_id: str | None = Field(
        default=None,
        description="The job that trained the deployed model version: feature parties serve "
        "inference for this job only.",
    )
    training_deadline: datetime | None = Field(
        default=None,
        description="The version in force's training deadline: no job is created after it, "
        "and a label party waiting for a lost party to come back gives up at it.",
    )
    job_locked: bool | None = Field(
        default=None,
        description="The job has a model version that is approved or was deployed: parties "
        "neither delete nor prepare it again (if asked about a job).",
    )
    deployed_model_digest: str | None = Field(
        default=None, description="The deployed model version's model digest, if recorded."
    )
    deployed_segment_digests: dict[str, str] | None = Field(
        default=None,
        description="The deployed model version's segment digest per party: a party serves "
        "only while its segment is the recorded one.",
    )
    checked_at: datetime

    @classmethod
    def of(cls, result: CheckResult, now: datetime) -> CheckOut:
        """The wire view of a check."""
        fields = {k: v for k, v in vars(result).items() if k != "parties"}
        parties = [CheckParty(name=p.name, role=p.role, org_id=p.org_id) for p in result.parties]
        return cls(**fields, parties=parties, checked_at=now)


class Expired(BaseModel):
    """Contracts the sweep marked expired."""

    expired: list[str]


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


class JobReport(RequestBody):
    """Progress of a job: any of a new status, a progress fraction, the latest metrics."""

    status: JobStatus | None = None
    progress: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    metrics: Metrics | None = None

    @model_validator(mode="after")
    def _something(self) -> JobReport:
        if self.status is None and self.progress is None and self.metrics is None:
            raise ValueError("send at least one of status, progress, metrics")
        return self


class JobOut(BaseModel):
    """A training job."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    contract_id: str
    contract_version: int
    label_party: str
    label_org_id: str
    status: JobStatus
    progress: float
    metrics: dict[str, Any]
    key_fingerprints: dict[str, Any]
    spec_digest: str | None = Field(
        description="SHA-256 of the job's terms as its contract version fixes them "
        "(`contracts.job.job_terms`): what every party trains; null for older jobs."
    )
    created_by: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


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

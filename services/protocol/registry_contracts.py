"""What the registry's API answers about contracts, jobs and model versions.

Shared by the registry (which builds them) and its clients (which parse them); see
:mod:`services.protocol.registry_types` for organisations and clients.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ContractState(StrEnum):
    """Where a contract stands. ``terminated`` and ``expired`` are final."""

    DRAFT = "draft"
    PROPOSED = "proposed"
    ACTIVE = "active"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"
    EXPIRED = "expired"


class VersionState(StrEnum):
    """Where one version's negotiation stands. Only a draft can change its document."""

    DRAFT = "draft"
    PROPOSED = "proposed"
    AGREED = "agreed"  # every party accepted this digest; the version in force
    SUPERSEDED = "superseded"  # was agreed, replaced by an agreed amendment
    REJECTED = "rejected"  # a party rejected it
    WITHDRAWN = "withdrawn"  # replaced by a newer proposal, or the contract ended


class PartyRole(StrEnum):
    """A party's role in a contract (the contract language's ``role``)."""

    LABEL = "label"
    FEATURE = "feature"


class Decision(StrEnum):
    """A party's answer to a proposed version."""

    ACCEPT = "accept"
    REJECT = "reject"


class JobStatus(StrEnum):
    """A training job's progress; ``finished``, ``failed`` and ``cancelled`` are final."""

    CREATED = "created"
    ALIGNING = "aligning"
    TRAINING = "training"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ModelStatus(StrEnum):
    """A model version's life: trained, then deployed (after approval), then retired."""

    TRAINED = "trained"
    DEPLOYED = "deployed"
    RETIRED = "retired"


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


class ContractOut(ContractSummary):
    """A contract with every version, oldest first."""

    versions: list[VersionOut]


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


class Expired(BaseModel):
    """Contracts the sweep marked expired."""

    expired: list[str]


class EpochOut(BaseModel):
    """One finished epoch of a job."""

    epoch: int = Field(description="Epoch number, from 0.")
    train_loss: float
    validation: dict[str, float] = Field(description="Validation metrics after the epoch.")
    seconds: float = Field(description="Wall time of the epoch.")


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
    history: list[EpochOut] = Field(
        default_factory=list,
        description="One entry per finished epoch, as the label party reported it.",
    )
    error: str | None = Field(
        default=None, description="Why a failed or cancelled job ended (null otherwise)."
    )
    failed_party: str | None = Field(
        default=None,
        description="The contract party at fault for a failed job: the one whose call failed "
        "or whose check refused (null when none is, e.g. a cancellation).",
    )


class ApprovalOut(BaseModel):
    """An approval of a model version."""

    model_config = ConfigDict(from_attributes=True)

    approver: str
    org_id: str
    approved_at: datetime


class ModelVersionOut(BaseModel):
    """A model version of a contract, where it stands in deployment, and its approvals."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    job_id: str
    contract_id: str
    version: int
    metrics: dict[str, Any]
    artifact_digests: dict[str, Any]
    contract_version: int | None = Field(description="The contract version it was trained under.")
    task: str | None = Field(description="What it predicts: binary, multiclass or regression.")
    columns: dict[str, Any] | None = Field(
        description="Each party's columns it was trained on (the contract's)."
    )
    spec_digest: str | None = Field(description="The job's spec digest (its terms).")
    segment_digests: dict[str, Any] | None = Field(
        description="Each party's segment digest: what every party serves."
    )
    model_digest: str | None = Field(
        description="Digest of the spec digest and every segment digest: prediction answers "
        "carry it."
    )
    status: ModelStatus = Field(
        description="`trained`, `deployed` (serving predictions; at most one per contract) or "
        "`retired`."
    )
    created_by: str
    created_at: datetime
    deployed_at: datetime | None = Field(
        description="When it last started serving (its last approval, or a rollback to it)."
    )
    retired_at: datetime | None = Field(description="When it last stopped serving.")
    quality_status: str | None = Field(
        default=None,
        description="`ok` or `alert` as the label party last reported its live quality (the "
        "contract's monitoring thresholds); null before any report.",
    )
    quality: dict[str, Any] | None = Field(
        default=None,
        description="That report: the live metric over the latest outcomes, every party's drift "
        "scores (PSI and KS per column), the alerts.",
    )
    quality_at: datetime | None = Field(default=None, description="When the report arrived.")
    approvals: list[ApprovalOut]

"""Request and answer bodies of model versions and their deployment."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.protocol.messages import PartyName
from services.registry.api.schemas import RequestBody
from services.registry.models_contracts import ModelStatus, ModelVersion
from services.registry.models_usage import ModelApproval


class ApprovalCreate(RequestBody):
    """One approver's approval of a model version."""

    approver: PartyName = Field(
        description="A name in the contract's `deployment.approvers` (a party or the owner) "
        "that the caller's organisation stands for."
    )


class Rollback(RequestBody):
    """A rollback takes no parameters (an empty object, or no body)."""


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

    @classmethod
    def of(cls, model: ModelVersion, approvals: Sequence[ModelApproval]) -> ModelVersionOut:
        """The wire view of a stored model version and its approvals."""
        return cls(
            id=model.id,
            job_id=model.job_id,
            contract_id=model.contract_id,
            version=model.version,
            metrics=model.metrics,
            artifact_digests=model.artifact_digests,
            contract_version=model.contract_version,
            task=model.task,
            columns=model.columns,
            spec_digest=model.spec_digest,
            segment_digests=model.segment_digests,
            model_digest=model.model_digest,
            status=model.status,
            created_by=model.created_by,
            created_at=model.created_at,
            deployed_at=model.deployed_at,
            retired_at=model.retired_at,
            quality_status=model.quality_status,
            quality=model.quality,
            quality_at=model.quality_at,
            approvals=[ApprovalOut.model_validate(a) for a in approvals],
        )


class QualityReport(BaseModel):
    """The label party's report of a deployed model version's live quality."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["ok", "alert"]
    alerts: list[Annotated[str, Field(max_length=500)]] = Field(
        default_factory=list, max_length=100
    )
    live: dict[str, Any] = Field(
        default_factory=dict, description="The live metric over the latest outcomes."
    )
    drift: list[dict[str, Any]] = Field(
        default_factory=list, max_length=64, description="Each party's drift scores."
    )

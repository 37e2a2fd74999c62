"""Request and answer bodies of model versions and their deployment."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from services.protocol.messages import PartyName
from services.protocol.registry_contracts import ApprovalOut as ApprovalOut
from services.protocol.registry_contracts import ModelVersionOut as ModelVersionOut
from services.registry.api.schemas import RequestBody
from services.registry.models_contracts import ModelVersion
from services.registry.models_usage import ModelApproval


class ApprovalCreate(RequestBody):
    """One approver's approval of a model version."""

    approver: PartyName = Field(
        description="A name in the contract's `deployment.approvers` (a party or the owner) "
        "that the caller's organisation stands for."
    )


class Rollback(RequestBody):
    """A rollback takes no parameters (an empty object, or no body)."""


def model_version_out(model: ModelVersion, approvals: Sequence[ModelApproval]) -> ModelVersionOut:
    """The wire view of a stored model version and its approvals."""
    return ModelVersionOut(
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

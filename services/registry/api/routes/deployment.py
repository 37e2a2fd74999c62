"""Model versions of a contract and their deployment: approvals, rollback, reads."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy.orm import Session

from services.protocol.bounds import INT32_MAX
from services.registry.api.deps import JSON_BODY, OPTIONAL_JSON_BODY, CallerDep, SessionDep, WorkDep
from services.registry.api.schemas_deployment import (
    ApprovalCreate,
    ModelVersionOut,
    Rollback,
    model_version_out,
)
from services.registry.models import utcnow
from services.registry.models_contracts import ModelVersion
from services.registry.store import deployment, jobs

router = APIRouter(prefix="/v1/contracts/{contract_id}", tags=["deployment"])

ContractIdPath = Annotated[str, Path(min_length=1, max_length=36, description="Contract id.")]
VersionPath = Annotated[int, Path(ge=1, le=INT32_MAX, description="Model version number.")]


def _out(session: Session, model: ModelVersion) -> ModelVersionOut:
    return model_version_out(model, deployment.approvals_of(session, [model])[model.id])


@router.get("/model-versions")
def list_model_versions(
    session: SessionDep, caller: CallerDep, contract_id: ContractIdPath
) -> list[ModelVersionOut]:
    """A contract's model versions, oldest first, each with its deployment status and
    approvals (owner, parties, operators)."""
    models = jobs.model_versions(session, caller, contract_id)
    approvals = deployment.approvals_of(session, models)
    return [model_version_out(m, approvals[m.id]) for m in models]


@router.get("/model-versions/{version}")
def get_model_version(
    session: SessionDep, caller: CallerDep, contract_id: ContractIdPath, version: VersionPath
) -> ModelVersionOut:
    """One model version of a contract, with its deployment status and approvals (owner,
    parties, operators)."""
    return _out(session, deployment.read_model(session, caller, contract_id, version))


@router.post("/model-versions/{version}/approvals", dependencies=[JSON_BODY])
def approve(
    session: WorkDep,
    caller: CallerDep,
    contract_id: ContractIdPath,
    version: VersionPath,
    body: ApprovalCreate,
) -> ModelVersionOut:
    """Approve deploying a trained model version, for one of the contract's approvers
    (``deployment.approvers``: a party or the owner), by that approver's organisation with scope
    ``contracts:sign``, under an active contract inside its validity.

    When the last approver has approved, the version is deployed and the version deployed
    before it retired, at once: a contract serves one model version at a time. Approving again,
    or approving a deployed version, changes nothing (200); a retired version is a 409
    ``invalid_transition`` (roll back to serve it again). Answers the model version.
    """
    model = deployment.approve(
        session, caller, contract_id, version, approver=body.approver, now=utcnow()
    )
    return _out(session, model)


@router.post("/deployment/rollback", dependencies=[OPTIONAL_JSON_BODY])
def rollback(
    session: WorkDep,
    caller: CallerDep,
    contract_id: ContractIdPath,
    body: Rollback | None = None,
) -> ModelVersionOut:
    """Roll the contract's model back: the deployed version is retired and the one deployed
    before it serves again (an approver's organisation, scope ``contracts:sign``, while the
    contract is active or suspended). No body, or ``{}``.

    409 ``nothing_deployed`` if no version is deployed, ``no_previous_deployment`` if none was
    deployed before it. Answers the model version now deployed.
    """
    model = deployment.rollback(session, caller, contract_id, now=utcnow())
    return _out(session, model)

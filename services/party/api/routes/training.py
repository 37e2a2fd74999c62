"""Label-party endpoints: start and follow training runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from services.party.api.deps import JSON_BODY, OperatorDep, RunsDep
from services.party.auth import require_contract_protection
from services.party.registry_link import RegistryLink
from services.protocol.messages import TrainingSpec, TrainingStatus

router = APIRouter(prefix="/v1/trainings", tags=["training"])

JobIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


@router.post("", status_code=status.HTTP_202_ACCEPTED, dependencies=[JSON_BODY])
async def start_training(
    runs: RunsDep, caller: OperatorDep, spec: TrainingSpec, request: Request
) -> TrainingStatus:
    """Align rows with the feature parties and train the joint model in the background.

    This party must be the spec's label party and hold the label column. Follow progress with
    ``GET /v1/trainings/{job_id}``. With a registry, the contract must be active, this party its
    label party and the job its job (403 otherwise, and no run starts); the PSI runs with the
    contract's ``alignment.max_keys``: a key set above them is a 422 ``psi_set_too_large``.
    """
    link: RegistryLink | None = request.app.state.registry
    contract_id = spec.contract_id
    if link is not None and caller is not None and contract_id is not None:
        standing = await link.authorizer.require_standing(
            contract_id, caller.org_id, spec.job_id, role="label"
        )
        require_contract_protection(standing, spec.protection)
        limits = await link.psi_limits(contract_id, standing.contract_version, spec.psi_limits)
        spec = spec.model_copy(update={"psi_limits": limits})
        await link.check_table(runs.state.table, contract_id, standing.contract_version, label=True)
    return runs.start(spec)


@router.get("/{job_id}")
async def training_status(runs: RunsDep, _: OperatorDep, job_id: JobIdPath) -> TrainingStatus:
    """State, per-epoch metrics, test metrics and traffic of a training run."""
    return runs.get(job_id)

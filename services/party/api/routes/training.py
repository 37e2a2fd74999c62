"""Label-party endpoints: start and follow training runs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from contracts.job import training_spec
from services.party.api.deps import JSON_BODY, OperatorDep, RunsDep
from services.party.auth import PeerCaller
from services.party.contract_terms import check_training, require_replaceable, require_running
from services.party.registry_link import RegistryLink
from services.party.training.runs import TrainingRuns
from services.protocol.errors import BadRequest, Conflict, ErrorCode, Forbidden
from services.protocol.messages import (
    ContractTraining,
    TrainingSpec,
    TrainingStatus,
    WarmStart,
)

router = APIRouter(tags=["training"])

JobIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
ContractIdPath = Annotated[str, Path(min_length=1, max_length=64, description="Contract id.")]


async def _checked_start(
    runs: TrainingRuns, link: RegistryLink | None, caller: PeerCaller | None, spec: TrainingSpec
) -> TrainingStatus:
    """Start ``spec`` once, under a registry, the job is the contract's (field by field), still
    open at the registry and not immutable, and this party's table keeps its schema."""
    if link is not None and caller is not None and spec.contract_id is not None:
        name = runs.state.settings.name
        standing = await link.authorizer.require_standing(
            spec.contract_id, caller.org_id, spec.job_id, role="label"
        )
        require_replaceable(standing, spec.job_id, name, "train again")
        require_running(standing, spec.job_id)
        if standing.contract_version is None:
            raise Conflict("the contract has no version in force")
        contract = await link.contract(spec.contract_id, standing.contract_version)
        check_training(contract, spec, name)
        await link.check_table(
            runs.state.table, spec.contract_id, standing.contract_version, label=True
        )
    return runs.start(spec)


@router.post("/v1/trainings", status_code=status.HTTP_202_ACCEPTED, dependencies=[JSON_BODY])
async def start_training(
    runs: RunsDep, caller: OperatorDep, spec: TrainingSpec, request: Request
) -> TrainingStatus:
    """Align rows with the feature parties and train the joint model in the background.

    This party must be the spec's label party and hold the label column. Follow progress with
    ``GET /v1/trainings/{job_id}``. With a registry, the contract must be active, this party its
    label party and the job its job (403 otherwise), and the spec must ask for exactly the job
    the contract fixes: task, label, each party's columns, model, protection and training
    settings (403 ``contract_mismatch`` naming each field that differs; no run starts).
    ``POST /v1/contracts/{contract_id}/trainings`` derives that spec from the contract instead.
    """
    return await _checked_start(runs, request.app.state.registry, caller, spec)


@router.post(
    "/v1/contracts/{contract_id}/trainings",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[JSON_BODY],
)
async def start_contract_training(
    runs: RunsDep,
    caller: OperatorDep,
    contract_id: ContractIdPath,
    body: ContractTraining,
    request: Request,
) -> TrainingStatus:
    """Train the job a contract fixes, with no spec written by hand.

    The party fetches the contract version in force from the registry and derives the training
    spec from it (``contracts.job.training_spec``): task, label, columns, model, protection and
    training settings. Feature parties are reached at ``feature_urls``, else at this party's
    ``SPLICE_PARTY_PEERS`` setting. Without ``job_id`` the party opens a job under the contract
    at the registry first (as its own client, scope ``jobs:run``). The caller is this party's
    own organisation with a token of scope ``jobs:run`` whose audience is this party's URL.
    """
    return await _contract_start(runs, caller, contract_id, body, request)


@router.post(
    "/v1/contracts/{contract_id}/retrainings",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[JSON_BODY],
)
async def start_retraining(
    runs: RunsDep,
    caller: OperatorDep,
    contract_id: ContractIdPath,
    body: ContractTraining,
    request: Request,
) -> TrainingStatus:
    """Retrain the deployed model under the contract's retraining policy.

    Allowed only when the contract version in force states ``training.retraining`` and, for a
    policy that retrains on alert only, while the live-quality alert is raised (``GET
    /v1/contracts/{id}/quality``); otherwise 409 ``retraining_not_allowed`` and nothing starts.
    The job is an ordinary job of the contract, derived as ``POST .../trainings`` derives it
    (same terms, same protection), that warm-starts from the deployed job (the champion: every
    party starts from its weights and encoders) and trains the policy's ``epochs`` on the recent
    window: the label party's rows added after the champion trained. Its model version serves
    only after the contract's approvals."""
    link: RegistryLink | None = request.app.state.registry
    if link is None or caller is None:
        raise BadRequest("this party runs without a registry: no contract to retrain under")
    standing = await link.authorizer.standing_of(contract_id, caller.org_id, None)
    if not standing.active or standing.caller_role != "label":
        raise Forbidden(
            "only the label party of an active contract retrains under it",
            detail={"contract": contract_id},
        )
    if standing.contract_version is None:
        raise Conflict(f"contract {contract_id} has no version in force")
    policy = (await link.contract(contract_id, standing.contract_version)).training.retraining
    alert = request.app.state.monitor.alerts.get(contract_id, False)
    why = None
    if policy is None:
        why = "the contract states no retraining policy"
    elif policy.on_alert and policy.cadence_days is None and not alert:
        why = "the contract retrains on a live-quality alert only, and none is raised"
    elif standing.deployed_job_id is None:
        why = "no model version is deployed: there is no champion to retrain"
    if why is not None:
        raise Conflict(
            f"contract {contract_id}: {why}",
            code=ErrorCode.RETRAINING_NOT_ALLOWED,
            detail={"policy": None if policy is None else policy.model_dump(), "alert": alert},
        )
    assert policy is not None and standing.deployed_job_id is not None
    champion = runs.runs.get(standing.deployed_job_id)
    if champion is None:
        raise Conflict(
            f"the deployed job {standing.deployed_job_id} is not loaded at this party",
            code=ErrorCode.WARM_START_REFUSED,
            detail={"warm_start": standing.deployed_job_id},
        )
    warm = WarmStart(
        job_id=standing.deployed_job_id,
        from_row=champion.status.rows.get("label_rows", 0),
        epochs=policy.epochs,
        batch_size=policy.batch_size,
        lr_factor=policy.lr_factor,
    )
    return await _contract_start(runs, caller, contract_id, body, request, warm)


async def _contract_start(
    runs: TrainingRuns,
    caller: PeerCaller | None,
    contract_id: str,
    body: ContractTraining,
    request: Request,
    warm: WarmStart | None = None,
) -> TrainingStatus:
    link: RegistryLink | None = request.app.state.registry
    if link is None or caller is None:
        raise BadRequest(
            "this party runs without a registry: post a training spec to /v1/trainings"
        )
    job_id = body.job_id or await link.create_job(contract_id)
    standing = await link.authorizer.require_standing(
        contract_id, caller.org_id, job_id, role="label"
    )
    if standing.contract_version is None:
        raise Conflict(f"contract {contract_id} has no version in force")
    contract = await link.contract(contract_id, standing.contract_version)
    urls = {**runs.state.settings.peers, **{k: str(v) for k, v in body.feature_urls.items()}}
    try:
        spec = training_spec(
            contract,
            job_id=job_id,
            contract_id=contract_id,
            feature_urls=urls,
            seed=body.seed,
            checkpoint_every=body.checkpoint_every,
        )
        if warm is not None:  # a retraining job: from the champion, on the recent window
            spec = spec.model_copy(update={"warm_start": warm})
    except KeyError as exc:
        raise BadRequest(
            f"{exc.args[0]}: give feature_urls or set SPLICE_PARTY_PEERS",
            detail={"feature_parties": [p.name for p in contract.feature_parties]},
        ) from exc
    return await _checked_start(runs, link, caller, spec)


@router.get("/v1/trainings/{job_id}")
async def training_status(runs: RunsDep, _: OperatorDep, job_id: JobIdPath) -> TrainingStatus:
    """State, per-epoch metrics, test metrics and traffic of a training run."""
    return runs.get(job_id)

"""Jobs and models: live job progress (htmx polls a fragment), model versions, approvals,
deployment and rollback, through the store functions of ``/v1/jobs`` and
``/v1/contracts/{id}/model-versions``."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from sqlalchemy import select
from starlette.responses import Response

from services.protocol.errors import BadRequest, NotFound, SpliceError
from services.registry.api.deps import SessionDep
from services.registry.console.charts import epoch_curves
from services.registry.console.contract_access import committed, visible_contract
from services.registry.console.web import (
    ActorDep,
    ConsoleRoute,
    Person,
    PersonDep,
    field,
    form_of,
    page,
    see_other,
)
from services.registry.models import utcnow
from services.registry.models_contracts import Job
from services.registry.store import deployment, jobs
from services.registry.store.contracts import (
    get_contract,
    list_contracts,
    parties_of,
    version_of,
)

router = APIRouter(route_class=ConsoleRoute, include_in_schema=False)
IdPath = Annotated[str, Path(min_length=1, max_length=36)]
ContractQuery = Annotated[str | None, Query(alias="contract", max_length=36)]


def _contracts(session: SessionDep, person: Person, contract: str | None) -> list[Any]:
    found = list(list_contracts(session, person.caller))
    if contract is not None:
        found = [c for c in found if c.id == contract]
        if not found:
            raise NotFound(f"no contract {contract}")
    return found


@router.get("/console/jobs")
def job_list(
    request: Request, session: SessionDep, person: PersonDep, contract: ContractQuery = None
) -> Response:
    """Training jobs of the organisation's contracts, newest first."""
    records = {c.id: c for c in _contracts(session, person, contract)}
    rows = session.scalars(
        select(Job).where(Job.contract_id.in_(list(records))).order_by(Job.created_at.desc())
    ).all()
    return page(request, "jobs.html", {"jobs": rows, "contracts": records}, person=person)


def _job(session: SessionDep, person: Person, job_id: str) -> Job:
    try:
        return jobs.get_job(session, person.caller, job_id)
    except SpliceError:
        raise NotFound(f"no job {job_id}") from None  # another organisation's job is not named


def _job_context(session: SessionDep, job: Job) -> dict[str, Any]:
    metrics: dict[str, float] = dict(job.metrics or {})
    version = version_of(session, job.contract_id, job.contract_version)
    parties = [
        {
            "name": p.name,
            "role": p.role.value,
            "key": "registered" if p.name in job.key_fingerprints else "not yet",
            "rows": metrics.get(f"rows.{p.name}"),
        }
        for p in parties_of(session, version.id)
    ]
    document = json.loads(version.document)
    max_epochs = int((document.get("training") or {}).get("max_epochs") or 0)
    return {
        "job": job,
        "max_epochs": max_epochs,
        "epochs": round(float(job.progress) * max_epochs),
        "percent": round(100 * float(job.progress)),
        "epsilon": metrics.get("privacy.epsilon"),
        "delta": metrics.get("privacy.delta"),
        "alignment": {k[5:]: v for k, v in metrics.items() if k.startswith("rows.")},
        "validation": {k[11:]: v for k, v in metrics.items() if k.startswith("validation.")},
        "metrics": metrics,
        "curves": epoch_curves(job.history),
        "parties": parties,
        "running": job.status.value in ("created", "aligning", "training"),
    }


@router.get("/console/jobs/{job_id}")
def job_page(request: Request, session: SessionDep, person: PersonDep, job_id: IdPath) -> Response:
    """A job, with a progress panel that refreshes itself while the job runs."""
    job = _job(session, person, job_id)
    context = _job_context(session, job) | {"contract": get_contract(session, job.contract_id)}
    return page(request, "job.html", context, person=person)


@router.get("/console/jobs/{job_id}/progress")
def job_progress(
    request: Request, session: SessionDep, person: PersonDep, job_id: IdPath
) -> Response:
    """The progress panel alone (what htmx polls)."""
    job = _job(session, person, job_id)
    return page(request, "job_progress.html", _job_context(session, job), person=person)


@router.get("/console/models")
def models(
    request: Request, session: SessionDep, person: PersonDep, contract: ContractQuery = None
) -> Response:
    """Model versions per contract with approvals, deployment and rollback."""
    sections = []
    for record in _contracts(session, person, contract):
        found = jobs.model_versions(session, person.caller, record.id)
        approvals = deployment.approvals_of(session, found)
        approvers: dict[str, str] = {}
        if record.active_version is not None:
            version = version_of(session, record.id, record.active_version)
            approvers = deployment.approvers_of(session, record, version)
        sections.append(
            {
                "record": record,
                "models": found,
                "approvals": approvals,
                "mine": [n for n, org in approvers.items() if org == person.user.org_id],
                "approvers": approvers,
                "json": json.dumps,
            }
        )
    return page(request, "models.html", {"sections": sections}, person=person)


def _member(session: SessionDep, person: Person, contract_id: str) -> None:
    person.caller.require_scope("contracts:sign")
    visible_contract(session, person, contract_id)


@router.post("/console/contracts/{contract_id}/models/{version}/approve")
async def approve(
    request: Request,
    session: SessionDep,
    person: ActorDep,
    contract_id: IdPath,
    version: Annotated[int, Path(ge=1, le=2**31 - 1)],
) -> Response:
    """Approve a model version for one of the organisation's approvers."""
    _member(session, person, contract_id)
    form = await form_of(request)
    approver = field(form, "approver", limit=64)
    if not approver:
        raise BadRequest("name the approver")
    with committed(session):
        deployment.approve(
            session, person.caller, contract_id, version, approver=approver, now=utcnow()
        )
    return see_other(f"/console/models?contract={contract_id}")


@router.post("/console/contracts/{contract_id}/rollback")
def rollback(session: SessionDep, person: ActorDep, contract_id: IdPath) -> Response:
    """Retire the deployed model version; the one before serves again."""
    _member(session, person, contract_id)
    with committed(session):
        deployment.rollback(session, person.caller, contract_id, now=utcnow())
    return see_other(f"/console/models?contract={contract_id}")

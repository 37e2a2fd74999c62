"""Deploying model versions: approvals, promotion, retirement and rollback.

A trained model version serves predictions once every approver the contract version in force
names (``deployment.approvers``: party or owner names) has approved it, each by its own
organisation. The last approval deploys it and retires the version deployed before, in the same
transaction: a contract has at most one deployed version. A rollback retires the deployed version
and deploys again the one deployed before it. Every change takes the contract's row lock first
(as jobs do), so concurrent approvals and rollbacks of one contract are serialised.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.protocol.errors import Conflict, ErrorCode, Forbidden, NotFound
from services.registry.auth import Caller
from services.registry.models_contracts import (
    ContractRecord,
    ContractState,
    ContractVersion,
    ModelStatus,
    ModelVersion,
)
from services.registry.models_usage import ModelApproval
from services.registry.store import audit
from services.registry.store.contracts import (
    CONTRACTS_SIGN,
    get_contract,
    parties_of,
    require_live,
    require_member,
    transition_error,
    version_of,
)


def approvers_of(
    session: Session, record: ContractRecord, version: ContractVersion
) -> dict[str, str]:
    """The approvers ``version`` names, in its order: name -> organisation id (a party's
    organisation, or the owner's for the owner's name)."""
    document = json.loads(version.document)
    orgs = {p.name: p.org_id for p in parties_of(session, version.id)}
    orgs.setdefault(document["owner"]["name"], record.owner_org_id)
    names = (document.get("deployment") or {}).get("approvers") or []
    return {name: orgs[name] for name in names if name in orgs}


def _in_force(
    session: Session, caller: Caller, record: ContractRecord, verb: str, now: datetime
) -> ContractVersion:
    """The version in force; :class:`Conflict` without one (after the member and liveness
    checks: who approves is only known from that version)."""
    if record.active_version is None:
        require_member(session, caller, record)
        require_live(session, record, now)
        raise transition_error(record, verb, "active")
    return version_of(session, record.id, record.active_version)


def get_model(
    session: Session, contract_id: str, version: int, *, for_update: bool = False
) -> ModelVersion:
    """Model version ``version`` of a contract, or :class:`NotFound`."""
    stmt = select(ModelVersion).where(
        ModelVersion.contract_id == contract_id, ModelVersion.version == version
    )
    if for_update:
        stmt = stmt.with_for_update().execution_options(populate_existing=True)
    model = session.scalar(stmt)
    if model is None:
        raise NotFound(
            f"contract {contract_id} has no model version {version}",
            detail={"contract_id": contract_id, "model_version": version},
        )
    return model


def deployed_model(session: Session, contract_id: str) -> ModelVersion | None:
    """The contract's deployed model version, if any."""
    return session.scalar(
        select(ModelVersion).where(
            ModelVersion.contract_id == contract_id, ModelVersion.status == ModelStatus.DEPLOYED
        )
    )


def read_model(session: Session, caller: Caller, contract_id: str, version: int) -> ModelVersion:
    """One model version, for the contract's owner, parties and operators."""
    require_member(session, caller, get_contract(session, contract_id))
    return get_model(session, contract_id, version)


def approvals_of(
    session: Session, models: Sequence[ModelVersion]
) -> dict[str, list[ModelApproval]]:
    """The approvals of each model version (by model version id), oldest first."""
    found: dict[str, list[ModelApproval]] = {m.id: [] for m in models}
    if not found:
        return found
    rows = session.scalars(
        select(ModelApproval)
        .where(ModelApproval.model_version_id.in_(list(found)))
        .order_by(ModelApproval.approved_at, ModelApproval.id)
    )
    for row in rows:
        found[row.model_version_id].append(row)
    return found


def approve(
    session: Session,
    caller: Caller,
    contract_id: str,
    version: int,
    *,
    approver: str,
    now: datetime,
) -> ModelVersion:
    """Record ``approver``'s approval of a trained model version; the last approval the
    contract needs deploys it (and retires the version deployed before).

    The caller acts for the approver's organisation with scope ``contracts:sign``, under an
    active contract inside its validity. Approving again, or approving a deployed version,
    changes nothing; a retired version is a 409.
    """
    caller.require_scope(CONTRACTS_SIGN)
    record = get_contract(session, contract_id, for_update=True)
    in_force = _in_force(session, caller, record, "approve a model version under", now)
    approvers = approvers_of(session, record, in_force)
    if caller.is_admin or approver not in approvers or caller.org_id != approvers[approver]:
        raise Forbidden(
            f"only the organisation of approver {approver!r} approves for it; this contract's "
            f"approvers are {', '.join(approvers)}",
            detail={"approver": approver, "approvers": list(approvers)},
        )
    require_live(session, record, now)
    if record.state is not ContractState.ACTIVE:
        raise transition_error(record, "approve a model version under", "active")
    if not in_force.valid_from <= now < in_force.valid_until:
        raise Conflict(
            f"the contract is valid from {in_force.valid_from.isoformat()}",
            code=ErrorCode.INVALID_TRANSITION,
        )
    model = get_model(session, record.id, version, for_update=True)
    if model.status is ModelStatus.RETIRED:
        raise Conflict(
            f"model version {version} is retired: roll back to serve it again",
            code=ErrorCode.INVALID_TRANSITION,
            detail={"status": model.status.value},
        )
    done = approvals_of(session, [model])[model.id]
    if model.status is ModelStatus.DEPLOYED or any(a.approver == approver for a in done):
        return model
    approval = ModelApproval(
        model_version_id=model.id,
        approver=approver,
        org_id=approvers[approver],
        approved_by=caller.subject,
        approved_at=now,
    )
    session.add(approval)
    session.flush()
    audit.append(
        session,
        actor=caller.subject,
        action="model_version.approved",
        subject=f"contract:{record.id}",
        payload={"model_version": model.version, "approver": approver},
    )
    valid = {a.approver for a in [*done, approval] if approvers.get(a.approver) == a.org_id}
    if valid >= approvers.keys():
        _deploy(session, caller, record, model, now)
    return model


def _deploy(
    session: Session, caller: Caller, record: ContractRecord, model: ModelVersion, now: datetime
) -> None:
    previous = _deployed_for_update(session, record.id)
    if previous is not None:
        previous.status = ModelStatus.RETIRED
        previous.retired_at = now
        session.flush()
        audit.append(
            session,
            actor=caller.subject,
            action="model_version.retired",
            subject=f"contract:{record.id}",
            payload={"model_version": previous.version, "replaced_by": model.version},
        )
    model.status = ModelStatus.DEPLOYED
    model.deployed_at = now
    model.retired_at = None
    session.flush()
    audit.append(
        session,
        actor=caller.subject,
        action="model_version.deployed",
        subject=f"contract:{record.id}",
        payload={
            "model_version": model.version,
            "job_id": model.job_id,
            "replaces": previous.version if previous is not None else None,
        },
    )


def _deployed_for_update(session: Session, contract_id: str) -> ModelVersion | None:
    return session.scalar(
        select(ModelVersion)
        .where(ModelVersion.contract_id == contract_id, ModelVersion.status == ModelStatus.DEPLOYED)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


def rollback(session: Session, caller: Caller, contract_id: str, *, now: datetime) -> ModelVersion:
    """Retire the deployed model version and deploy again the one deployed before it (the
    retired version deployed most recently); answers the version now deployed.

    The caller acts for the organisation of one of the contract's approvers, with scope
    ``contracts:sign``, under an active or suspended contract. 409 ``nothing_deployed`` when no
    version is deployed, ``no_previous_deployment`` when none was deployed before it.
    """
    caller.require_scope(CONTRACTS_SIGN)
    record = get_contract(session, contract_id, for_update=True)
    in_force = _in_force(session, caller, record, "roll back the model of", now)
    approvers = approvers_of(session, record, in_force)
    if caller.is_admin or caller.org_id not in approvers.values():
        raise Forbidden(
            "only the organisation of one of the contract's approvers rolls its model back",
            detail={"approvers": list(approvers)},
        )
    require_live(session, record, now)
    current = _deployed_for_update(session, record.id)
    if current is None:
        raise Conflict(
            f"contract {record.id} has no deployed model version",
            code=ErrorCode.NOTHING_DEPLOYED,
        )
    previous = session.scalar(
        select(ModelVersion)
        .where(
            ModelVersion.contract_id == record.id,
            ModelVersion.status == ModelStatus.RETIRED,
            ModelVersion.deployed_at.is_not(None),
            ModelVersion.id != current.id,
        )
        .order_by(ModelVersion.deployed_at.desc(), ModelVersion.version.desc())
        .limit(1)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if previous is None:
        raise Conflict(
            f"model version {current.version} is the first deployed: there is nothing to roll "
            "back to",
            code=ErrorCode.NO_PREVIOUS_DEPLOYMENT,
            detail={"deployed_model_version": current.version},
        )
    current.status = ModelStatus.RETIRED
    current.retired_at = now
    session.flush()
    previous.status = ModelStatus.DEPLOYED
    previous.deployed_at = now
    previous.retired_at = None
    session.flush()
    audit.append(
        session,
        actor=caller.subject,
        action="model_version.rolled_back",
        subject=f"contract:{record.id}",
        payload={
            "from": current.version,
            "to": previous.version,
            "job_id": previous.job_id,
        },
    )
    return previous

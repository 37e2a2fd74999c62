"""Contracts: drafts, proposals, signatures, suspension, termination, amendments, checks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy.orm import Session

from services.protocol.bounds import INT32_MAX
from services.protocol.messages import PartyName
from services.registry.api.contract_input import (
    DOCUMENT_BODY,
    DocumentDep,
    WriterDep,
    resolved,
)
from services.registry.api.deps import JSON_BODY, AdminDep, CallerDep, SessionDep, WorkDep
from services.registry.api.schemas_contracts import (
    CheckOut,
    ContractOut,
    ContractSummary,
    Expired,
    Reason,
    Signing,
    check_out,
    contract_out,
    contract_summary,
)
from services.registry.auth import Caller
from services.registry.models import utcnow
from services.registry.models_contracts import ContractState, PartyRole
from services.registry.store import contract_drafts, contract_lifecycle
from services.registry.store.contract_check import check
from services.registry.store.contracts import (
    get_contract,
    list_contracts,
    require_member,
    version_of,
    version_views,
)

router = APIRouter(prefix="/v1/contracts", tags=["contracts"])

ContractIdPath = Annotated[str, Path(min_length=1, max_length=36, description="Contract id.")]


def _answer(session: Session, caller: Caller, contract_id: str) -> ContractOut:
    record = get_contract(session, contract_id)
    require_member(session, caller, record)
    return contract_out(record, version_views(session, record.id), utcnow())


@router.post(
    "", status_code=status.HTTP_201_CREATED, openapi_extra=DOCUMENT_BODY, response_model=ContractOut
)
def create(session: WorkDep, caller: WriterDep, document: DocumentDep) -> ContractOut:
    """Create a contract from a document (JSON or YAML); it starts as draft version 1.

    The caller acts for the owner (``owner.org``) with scope ``contracts:write``. Every
    ``org`` in the document names an approved registry organisation, by id or by name. An invalid
    document is a 422 whose ``detail`` names each field (``["body", "parties", 1, "role"]``);
    nothing is written.
    """
    record, _ = contract_drafts.create_contract(
        session, caller, resolved(session, document), now=utcnow()
    )
    return _answer(session, caller, record.id)


@router.get("")
def list_all(
    session: SessionDep,
    caller: CallerDep,
    state: Annotated[ContractState | None, Query(description="Stored state.")] = None,
) -> list[ContractSummary]:
    """Contracts the caller's organisation owns or is a party to (operators: all), newest
    first."""
    now = utcnow()
    return [contract_summary(r, now) for r in list_contracts(session, caller, state)]


@router.post("/expire-due")
def expire_due(session: WorkDep, _: AdminDep) -> Expired:
    """Mark every contract whose validity ended as expired, now (operators only). Reads already
    show such contracts as expired; this writes it, with its audit entries."""
    expired = contract_lifecycle.expire_due(session, now=utcnow())
    return Expired(expired=expired)


@router.get("/{contract_id}")
def show(session: SessionDep, caller: CallerDep, contract_id: ContractIdPath) -> ContractOut:
    """A contract with every version (document, digest, parties, signatures), for its owner,
    its parties and operators."""
    return _answer(session, caller, contract_id)


@router.get(
    "/{contract_id}/versions/{version}/document",
    responses={200: {"content": {"application/json": {}}}},
)
def document(
    session: SessionDep,
    caller: CallerDep,
    contract_id: ContractIdPath,
    version: Annotated[int, Path(ge=1, le=INT32_MAX, description="Version number.")],
) -> Response:
    """The exact canonical JSON bytes of one version: their SHA-256 is the digest to sign."""
    record = get_contract(session, contract_id)
    require_member(session, caller, record)
    stored = version_of(session, record.id, version)
    return Response(
        stored.document.encode(),
        media_type="application/json",
        headers={"X-Contract-Digest": stored.digest},
    )


@router.put("/{contract_id}/draft", openapi_extra=DOCUMENT_BODY, response_model=ContractOut)
def replace_draft(
    session: WorkDep, caller: WriterDep, contract_id: ContractIdPath, document: DocumentDep
) -> ContractOut:
    """Replace the draft's document (owner, ``contracts:write``). Only a draft changes: a
    proposed version is immutable, and changing it is an amendment."""
    contract_drafts.replace_draft(
        session, caller, contract_id, resolved(session, document), now=utcnow()
    )
    return _answer(session, caller, contract_id)


@router.post("/{contract_id}/propose")
def propose(session: WorkDep, caller: CallerDep, contract_id: ContractIdPath) -> ContractOut:
    """Propose the draft to every party (owner, ``contracts:write``). From now on it never
    changes; each party accepts or rejects its digest. An older proposal still open is
    withdrawn."""
    contract_drafts.propose(session, caller, contract_id, now=utcnow())
    return _answer(session, caller, contract_id)


@router.post("/{contract_id}/sign", dependencies=[JSON_BODY])
def sign(
    session: WorkDep, caller: CallerDep, contract_id: ContractIdPath, body: Signing
) -> ContractOut:
    """Accept or reject the proposed version for one party (that party's organisation, scope
    ``contracts:sign``).

    ``digest`` must be the proposed version's: any other is a 409 (the text changed since it was
    reviewed). When every party has accepted, the version is agreed and the contract active; a
    rejection of a first proposal terminates the contract, of an amendment only the amendment.
    """
    contract_lifecycle.sign(
        session,
        caller,
        contract_id,
        party=body.party,
        decision=body.decision,
        digest=body.digest,
        reason=body.reason,
        now=utcnow(),
    )
    return _answer(session, caller, contract_id)


@router.post("/{contract_id}/suspend", dependencies=[JSON_BODY])
def suspend(
    session: WorkDep, caller: CallerDep, contract_id: ContractIdPath, body: Reason
) -> ContractOut:
    """Suspend an active contract (owner with ``contracts:write``, or an operator). Party
    services refuse its calls and no job moves on until it is reinstated."""
    contract_lifecycle.suspend(session, caller, contract_id, reason=body.reason, now=utcnow())
    return _answer(session, caller, contract_id)


@router.post("/{contract_id}/reinstate")
def reinstate(session: WorkDep, caller: CallerDep, contract_id: ContractIdPath) -> ContractOut:
    """Reinstate a suspended contract (owner or operator; an operator's suspension only by an
    operator)."""
    contract_lifecycle.reinstate(session, caller, contract_id, now=utcnow())
    return _answer(session, caller, contract_id)


@router.post("/{contract_id}/terminate", dependencies=[JSON_BODY])
def terminate(
    session: WorkDep, caller: CallerDep, contract_id: ContractIdPath, body: Reason
) -> ContractOut:
    """Terminate a contract for good (owner with ``contracts:write``, or an operator). Open
    versions are withdrawn and running jobs cancelled."""
    contract_lifecycle.terminate(session, caller, contract_id, reason=body.reason, now=utcnow())
    return _answer(session, caller, contract_id)


@router.post(
    "/{contract_id}/amendments",
    status_code=status.HTTP_201_CREATED,
    openapi_extra=DOCUMENT_BODY,
    response_model=ContractOut,
)
def amend(
    session: WorkDep, caller: WriterDep, contract_id: ContractIdPath, document: DocumentDep
) -> ContractOut:
    """Start an amendment: the document becomes a new draft version (owner,
    ``contracts:write``). Once proposed, every party signs it again; the version in force stays
    in force until the amendment is agreed, then it is superseded."""
    contract_drafts.amend(session, caller, contract_id, resolved(session, document), now=utcnow())
    return _answer(session, caller, contract_id)


@router.get("/{contract_id}/check")
def check_contract(
    session: SessionDep,
    caller: CallerDep,
    contract_id: ContractIdPath,
    party: Annotated[PartyName | None, Query(description="A party's name.")] = None,
    role: Annotated[PartyRole | None, Query(description="The role the call needs.")] = None,
    job_id: Annotated[str | None, Query(max_length=36)] = None,
) -> CheckOut:
    """For party services (cache the answer briefly): is the contract active now, which
    organisation is ``party`` and in which role, and does ``job_id`` belong to the contract.

    Read-only; the caller must be the owner, a party or an operator.
    """
    now = utcnow()
    result = check(session, caller, contract_id, now=now, party=party, role=role, job_id=job_id)
    return check_out(result, now)

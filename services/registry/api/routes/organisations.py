"""Organisations: applications, approval, suspension, initial access tokens."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Path, Query, status
from sqlalchemy.orm import Session

from services.registry.api.deps import (
    JSON_BODY,
    OPTIONAL_JSON_BODY,
    AdminDep,
    CallerDep,
    SessionDep,
    SettingsDep,
    WorkDep,
)
from services.registry.api.schemas import (
    Approval,
    ClientOut,
    InitialAccessRequest,
    InitialAccessTokenOut,
    OrganisationApplication,
    OrganisationOut,
    Suspension,
    client_out,
)
from services.registry.models import Organisation, OrgStatus
from services.registry.store import clients, grants, organisations

router = APIRouter(prefix="/v1/organisations", tags=["onboarding"])

OrgIdPath = Annotated[str, Path(min_length=1, max_length=36, description="Organisation id.")]
GrantPath = Annotated[
    Literal["reports:all-contracts", "audit:verify"],
    Path(description="reports:all-contracts or audit:verify."),
]


def _out(session: Session, org: Organisation) -> OrganisationOut:
    return OrganisationOut.model_validate(org).model_copy(
        update={"grants": grants.grants_of(session, org.id)}
    )


@router.post("/applications", status_code=status.HTTP_201_CREATED, dependencies=[JSON_BODY])
def apply(session: WorkDep, body: OrganisationApplication) -> OrganisationOut:
    """Apply to join the registry with an invitation code (no other credentials needed).

    The organisation starts ``pending``; an operator approves it and hands over an initial access
    token for client registration. Names are unique, regardless of case. An unknown, used or
    expired code is a 403 ``invalid_invitation``.
    """
    org = organisations.apply(
        session,
        name=body.name,
        kind=body.kind,
        contact_email=body.contact_email,
        invitation_code=body.invitation_code,
    )
    return _out(session, org)


@router.get("")
def list_organisations(
    session: SessionDep,
    _: AdminDep,
    status_: Annotated[OrgStatus | None, Query(alias="status")] = None,
) -> list[OrganisationOut]:
    """All organisations by name, optionally only those with ``status`` (operators only)."""
    return [_out(session, o) for o in organisations.list_organisations(session, status_)]


@router.get("/{org_id}")
def get_organisation(session: SessionDep, caller: CallerDep, org_id: OrgIdPath) -> OrganisationOut:
    """One organisation (operators, or the organisation itself)."""
    caller.require_org(org_id)
    return _out(session, organisations.get_organisation(session, org_id))


@router.post("/{org_id}/approve")
def approve(
    session: WorkDep, admin: AdminDep, settings: SettingsDep, org_id: OrgIdPath
) -> Approval:
    """Approve a pending organisation (operators only).

    The answer carries the organisation's first initial access token, shown only here: hand it
    to the organisation, which registers an OAuth client with it at ``POST /v1/oauth/register``.
    It is an admin token: the client it registers may hold scope ``org:admin`` (the
    organisation's first admin, who manages its other clients). Approving anything but a
    pending organisation is a 409 ``invalid_transition``.
    """
    org, issued = organisations.approve(
        session,
        org_id,
        actor=admin.subject,
        token_ttl=timedelta(seconds=settings.initial_access_token_ttl_seconds),
    )
    return Approval(
        organisation=_out(session, org),
        initial_access_token=issued.token,
        initial_access_token_expires_at=issued.expires_at,
    )


@router.post(
    "/{org_id}/initial-access-tokens",
    status_code=status.HTTP_201_CREATED,
    dependencies=[OPTIONAL_JSON_BODY],
)
def issue_initial_access_token(
    session: WorkDep,
    caller: CallerDep,
    settings: SettingsDep,
    org_id: OrgIdPath,
    body: Annotated[InitialAccessRequest | None, Body()] = None,
) -> InitialAccessTokenOut:
    """Issue another one-time initial access token to an approved organisation: operators, or
    the organisation's own admin (scope ``org:admin``).

    Each token registers one client; ``{"admin": true}`` lets that client hold ``org:admin``.
    It is shown only in this answer.
    """
    caller.require_manager(org_id)
    admin = body is not None and body.admin
    issued = organisations.issue_initial_access_token(
        session,
        org_id,
        actor=caller.subject,
        ttl=timedelta(seconds=settings.initial_access_token_ttl_seconds),
        admin=admin,
    )
    return InitialAccessTokenOut(
        initial_access_token=issued.token, expires_at=issued.expires_at, admin=admin
    )


@router.post("/{org_id}/suspend", dependencies=[JSON_BODY])
def suspend(
    session: WorkDep, admin: AdminDep, org_id: OrgIdPath, body: Suspension
) -> OrganisationOut:
    """Suspend an organisation (operators only): its clients get no tokens and it can register
    none until it is reinstated. Suspending a suspended organisation changes nothing."""
    org = organisations.suspend(session, org_id, actor=admin.subject, reason=body.reason)
    return _out(session, org)


@router.post("/{org_id}/reinstate")
def reinstate(session: WorkDep, admin: AdminDep, org_id: OrgIdPath) -> OrganisationOut:
    """Lift a suspension (operators only): the organisation is approved again, or pending if it
    never was."""
    org = organisations.reinstate(session, org_id, actor=admin.subject)
    return _out(session, org)


@router.get("/{org_id}/clients")
def list_clients(session: SessionDep, caller: CallerDep, org_id: OrgIdPath) -> list[ClientOut]:
    """An organisation's OAuth clients, revoked ones included: operators, or the
    organisation's admin (scope ``org:admin``)."""
    caller.require_manager(org_id)
    organisations.get_organisation(session, org_id)
    return [client_out(c) for c in clients.list_clients(session, org_id)]


@router.put("/{org_id}/grants/{grant}")
def grant(
    session: WorkDep, admin: AdminDep, org_id: OrgIdPath, grant: GrantPath
) -> OrganisationOut:
    """Grant an organisation a cross-contract role (operators only): ``reports:all-contracts``
    (revenue, usage events and reconciliation of every contract) or ``audit:verify``.
    Granting a held role changes nothing."""
    grants.grant(session, org_id, grant, actor=admin.subject)
    return _out(session, organisations.get_organisation(session, org_id))


@router.delete("/{org_id}/grants/{grant}")
def revoke_grant(
    session: WorkDep, admin: AdminDep, org_id: OrgIdPath, grant: GrantPath
) -> OrganisationOut:
    """Take a cross-contract role back (operators only). Not held: no change."""
    grants.revoke(session, org_id, grant, actor=admin.subject)
    return _out(session, organisations.get_organisation(session, org_id))

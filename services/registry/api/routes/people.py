"""People: an organisation's users and roles, invited by its admin (or an operator).

Users sign in to the console (``/console/login``); each role holds a fixed set of the scopes
the API enforces (docs/console.md has the table).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Path, status

from services.registry.api.deps import JSON_BODY, CallerDep, HasherDep, SessionDep, SettingsDep
from services.registry.api.schemas_people import (
    InvitationAcceptance,
    UserInvitationOut,
    UserInvite,
    UserOut,
)
from services.registry.store import users
from services.registry.store.organisations import get_organisation

router = APIRouter(tags=["people"])
OrgIdPath = Annotated[str, Path(min_length=1, max_length=36, description="Organisation id.")]


@router.post(
    "/v1/organisations/{org_id}/user-invitations",
    status_code=status.HTTP_201_CREATED,
    dependencies=[JSON_BODY],
)
def invite_user(
    session: SessionDep,
    caller: CallerDep,
    settings: SettingsDep,
    org_id: OrgIdPath,
    body: UserInvite,
) -> UserInvitationOut:
    """Invite a person with a role (the organisation's admin, scope ``org:admin``, or
    operators: the first admin of a new organisation is invited by an operator). The code is
    shown only here."""
    issued = users.invite(
        session,
        caller,
        org_id,
        email=body.email,
        role=body.role,
        ttl=timedelta(hours=settings.user_invitation_ttl_hours),
    )
    session.commit()
    invitation = issued.invitation
    return UserInvitationOut(
        id=invitation.id,
        email=invitation.email,
        role=invitation.role,
        code=issued.code,
        join_url=f"{settings.issuer}/console/join?code={issued.code}",
        expires_at=invitation.expires_at,
    )


@router.post(
    "/v1/user-invitations/accept",
    status_code=status.HTTP_201_CREATED,
    dependencies=[JSON_BODY],
)
def accept_invitation(
    session: SessionDep, hasher: HasherDep, body: InvitationAcceptance
) -> UserOut:
    """Spend an invitation code: the person's account (the code is the credential). An
    unknown, used or expired code is a 403 ``invalid_invitation``."""
    user = users.accept(session, hasher, body.code, name=body.name, password=body.password)
    session.commit()
    return UserOut.of(user)


@router.get("/v1/organisations/{org_id}/users")
def list_users(session: SessionDep, caller: CallerDep, org_id: OrgIdPath) -> list[UserOut]:
    """The organisation's people (its members, or operators)."""
    caller.require_org(org_id)
    get_organisation(session, org_id)
    return [UserOut.of(u) for u in users.list_users(session, caller, org_id)]

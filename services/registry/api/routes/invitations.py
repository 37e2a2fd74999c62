"""Invitation codes, created by operators."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, status
from fastapi.exceptions import RequestValidationError

from services.registry.api.deps import JSON_BODY, AdminDep, SettingsDep, WorkDep
from services.registry.api.schemas import InvitationCreate, InvitationCreated
from services.registry.store import invitations

router = APIRouter(prefix="/v1/invitations", tags=["onboarding"])


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[JSON_BODY])
def create_invitation(
    session: WorkDep, admin: AdminDep, settings: SettingsDep, body: InvitationCreate
) -> InvitationCreated:
    """Create a one-time invitation code for a company (operators only).

    Hand the code to the company out of band; it applies with
    ``POST /v1/organisations/applications``. The code is shown only in this answer and expires
    after ``ttl_hours``.
    """
    if body.ttl_hours > settings.invitation_max_ttl_hours:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "ttl_hours"),
                    "msg": f"at most {settings.invitation_max_ttl_hours} hours on this registry",
                    "type": "less_than_equal",
                }
            ]
        )
    issued = invitations.create_invitation(
        session,
        actor=admin.subject,
        ttl=timedelta(hours=body.ttl_hours),
        note=body.note,
    )
    return InvitationCreated(
        id=issued.invitation.id,
        code=issued.code,
        expires_at=issued.invitation.expires_at,
        note=issued.invitation.note,
    )

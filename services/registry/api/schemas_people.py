"""Request and response bodies of people: users, roles and invitations (issue 19)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from services.registry.api.schemas import Email, RequestBody
from services.registry.models_people import Role, User

Password = Annotated[str, Field(min_length=12, max_length=256)]


class UserInvite(RequestBody):
    """Invite a person to the organisation with a role."""

    email: Email
    role: Role


class UserInvitationOut(BaseModel):
    """The invitation; ``code`` is shown only in this answer. The person sets a password at
    ``join_url`` (the console) or ``POST /v1/user-invitations/accept``."""

    id: str
    email: str
    role: Role
    code: str
    join_url: str
    expires_at: datetime


class InvitationAcceptance(RequestBody):
    """Accept an invitation: the person's name and password."""

    code: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
    password: Password


class UserOut(BaseModel):
    """A person of an organisation (no credentials)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    org_id: str
    email: str
    name: str
    role: Role
    totp: bool = Field(description="Whether two-factor sign-in (TOTP) is on.")
    created_at: datetime
    disabled_at: datetime | None

    @classmethod
    def of(cls, user: User) -> UserOut:
        """The public view of ``user``."""
        return cls(
            id=user.id,
            org_id=user.org_id,
            email=user.email,
            name=user.name,
            role=user.role,
            totp=user.totp_secret is not None,
            created_at=user.created_at,
            disabled_at=user.disabled_at,
        )

"""What the registry's API answers about organisations, OAuth clients and the audit log.

The registry builds these answers, and every client (the CLI, the party, the console) parses them
with the same types: :class:`services.protocol.registry_client.RegistryClient` returns them.
Answers may gain fields; parsing ignores the ones a client does not know yet.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class OrgKind(StrEnum):
    """What an organisation is in the supply chain."""

    SUPPLIER = "supplier"
    MANUFACTURER = "manufacturer"
    OEM = "oem"
    FINANCE = "finance"


class OrgStatus(StrEnum):
    """Onboarding state: pending until an admin approves; suspended blocks everything."""

    PENDING = "pending"
    APPROVED = "approved"
    SUSPENDED = "suspended"


class InvitationCreated(BaseModel):
    """The new invitation. ``code`` is shown only in this answer."""

    id: str
    code: str
    expires_at: datetime
    note: str | None


class OrganisationOut(BaseModel):
    """An organisation as the registry knows it."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    kind: OrgKind
    contact_email: str
    status: OrgStatus
    created_at: datetime
    approved_at: datetime | None
    suspended_at: datetime | None
    grants: list[str] = Field(
        default_factory=list,
        description="Roles an operator granted (e.g. reports:all-contracts, audit:verify).",
    )


class InitialAccessTokenOut(BaseModel):
    """A one-time token for ``POST /v1/oauth/register``, shown only in this answer."""

    initial_access_token: str
    expires_at: datetime
    admin: bool = False


class Approval(BaseModel):
    """The approved organisation and its first initial access token."""

    organisation: OrganisationOut
    initial_access_token: str
    initial_access_token_expires_at: datetime


class ClientRegistered(BaseModel):
    """RFC 7591 registration answer. ``client_secret`` is shown only in this answer."""

    client_id: str
    client_secret: str | None = None
    client_id_issued_at: int
    client_secret_expires_at: int | None = Field(default=None, description="0: never.")
    token_endpoint_auth_method: str
    grant_types: list[str]
    scope: str
    client_name: str | None = None
    jwks: dict[str, Any] | None = None
    org_id: str


class ClientOut(BaseModel):
    """An OAuth client (never its secret)."""

    client_id: str
    org_id: str
    client_name: str | None
    token_endpoint_auth_method: str
    scope: str
    jwks: dict[str, Any] | None
    created_at: datetime
    credentials_rotated_at: datetime | None
    revoked_at: datetime | None


class Rotated(BaseModel):
    """The client after rotation; ``client_secret`` (new) is shown only in this answer."""

    client: ClientOut
    client_secret: str | None = None


class ClientResources(BaseModel):
    """The resources a client serves (whose tokens it may introspect)."""

    client_id: str
    resources: list[str]


class ChainVerification(BaseModel):
    """Result of recomputing the audit hash chain."""

    ok: bool
    entries: int = Field(description="Entries that verified, in order.")
    head_hash: str = Field(description="Hash of the last verified entry; keep it to detect cuts.")
    first_bad_seq: int | None = None
    reason: str | None = None


class AuditEntryOut(BaseModel):
    """One audit log entry."""

    model_config = ConfigDict(from_attributes=True)

    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    payload: dict[str, Any]
    prev_hash: str
    hash: str

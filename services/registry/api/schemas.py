"""Request and response bodies of the registry API. Unknown request fields are refused (422)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from services.registry.models import AuditEntry, OAuthClient, OrgKind, OrgStatus
from services.registry.oauth.jwk import PublicJwkSet
from services.registry.oauth.scopes import parse_scope

Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, max_length=320, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s.]+$"
    ),
]
OrgName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
GrantType = Literal["client_credentials"]
Note = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


class RequestBody(BaseModel):
    """Base of request bodies: unknown fields are an error, not silently dropped."""

    model_config = ConfigDict(extra="forbid")


class InvitationCreate(RequestBody):
    """An invitation to hand to one company."""

    note: Note | None = Field(default=None, description="Who it is for (kept in the audit log).")
    ttl_hours: int = Field(default=24 * 7, ge=1, description="Hours until the code expires.")


class InvitationCreated(BaseModel):
    """The new invitation. ``code`` is shown only in this answer."""

    id: str
    code: str
    expires_at: datetime
    note: str | None


class OrganisationApplication(RequestBody):
    """A company applying to join, with the invitation code it was given."""

    name: OrgName
    kind: OrgKind
    contact_email: Email
    invitation_code: Annotated[str, Field(min_length=1, max_length=200)]


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


class Suspension(RequestBody):
    """Why an organisation is suspended (kept in the audit log)."""

    reason: Note


def _client_credentials() -> list[GrantType]:
    return ["client_credentials"]


class ClientRegistration(RequestBody):
    """RFC 7591 client metadata for a client credentials client.

    ``private_key_jwt`` (RFC 7523) needs ``jwks`` with the public signing keys;
    ``client_secret_basic`` takes none and gets a generated secret. Unlike RFC 7591's advice to
    ignore unknown metadata, unknown fields are refused: a mistyped security field must not pass
    silently.
    """

    token_endpoint_auth_method: Literal["client_secret_basic", "private_key_jwt"]
    scope: str = Field(
        description="Space-separated scopes, e.g. 'contracts:sign jobs:run'.", max_length=1000
    )
    jwks: PublicJwkSet | None = Field(default=None, validate_default=True)
    client_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    grant_types: list[GrantType] = Field(
        default_factory=_client_credentials, min_length=1, max_length=1
    )

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        return " ".join(parse_scope(value))

    @field_validator("jwks")
    @classmethod
    def _jwks_for_method(
        cls, value: PublicJwkSet | None, info: ValidationInfo
    ) -> PublicJwkSet | None:
        method = info.data.get("token_endpoint_auth_method")
        if method == "private_key_jwt" and value is None:
            raise ValueError("required when token_endpoint_auth_method is private_key_jwt")
        if method == "client_secret_basic" and value is not None:
            raise ValueError("not allowed when token_endpoint_auth_method is client_secret_basic")
        return value


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

    @classmethod
    def of(cls, client: OAuthClient) -> ClientOut:
        """The public view of a stored client."""
        return cls(
            client_id=client.client_id,
            org_id=client.org_id,
            client_name=client.client_name,
            token_endpoint_auth_method=client.auth_method.value,
            scope=client.scope,
            jwks=client.jwks,
            created_at=client.created_at,
            credentials_rotated_at=client.credentials_rotated_at,
            revoked_at=client.revoked_at,
        )


class Rotation(RequestBody):
    """New credentials: nothing for ``client_secret_basic``, the new ``jwks`` otherwise."""

    jwks: PublicJwkSet | None = None


class Rotated(BaseModel):
    """The client after rotation; ``client_secret`` (new) is shown only in this answer."""

    client: ClientOut
    client_secret: str | None = None


class ResourceClaim(RequestBody):
    """A resource (RFC 8707) the client serves: a party service's URL as tokens name it."""

    resource: Annotated[
        str,
        StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._~:/@+-]{0,199}$"),
    ] = Field(description="The audience of tokens for the service, e.g. https://pcb.example.")


class ClientResources(BaseModel):
    """The resources a client serves (whose tokens it may introspect)."""

    client_id: str
    resources: list[str]


class InitialAccessRequest(RequestBody):
    """Options of a new initial access token."""

    admin: bool = Field(
        default=False,
        description="The client registered with it may hold scope org:admin (manage the "
        "organisation's clients).",
    )


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

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditEntryOut:
        """The wire view of a stored entry."""
        return cls.model_validate(entry)

"""Request bodies of the registry API (unknown fields are refused: 422) and the functions that
build its answers from stored rows. The answer types live in :mod:`services.protocol` (the
registry's clients parse them), re-exported here."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from services.protocol.registry_types import (
    Approval as Approval,
)
from services.protocol.registry_types import (
    AuditEntryOut as AuditEntryOut,
)
from services.protocol.registry_types import (
    ChainVerification as ChainVerification,
)
from services.protocol.registry_types import (
    ClientOut as ClientOut,
)
from services.protocol.registry_types import (
    ClientRegistered as ClientRegistered,
)
from services.protocol.registry_types import (
    ClientResources as ClientResources,
)
from services.protocol.registry_types import (
    InitialAccessTokenOut as InitialAccessTokenOut,
)
from services.protocol.registry_types import (
    InvitationCreated as InvitationCreated,
)
from services.protocol.registry_types import (
    OrganisationOut as OrganisationOut,
)
from services.protocol.registry_types import (
    Rotated as Rotated,
)
from services.registry.models import AuditEntry, OAuthClient, OrgKind
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


class OrganisationApplication(RequestBody):
    """A company applying to join, with the invitation code it was given."""

    name: OrgName
    kind: OrgKind
    contact_email: Email
    invitation_code: Annotated[str, Field(min_length=1, max_length=200)]


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


class Rotation(RequestBody):
    """New credentials: nothing for ``client_secret_basic``, the new ``jwks`` otherwise."""

    jwks: PublicJwkSet | None = None


class ResourceClaim(RequestBody):
    """A resource (RFC 8707) the client serves: a party service's URL as tokens name it."""

    resource: Annotated[
        str,
        StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._~:/@+-]{0,199}$"),
    ] = Field(description="The audience of tokens for the service, e.g. https://pcb.example.")


class InitialAccessRequest(RequestBody):
    """Options of a new initial access token."""

    admin: bool = Field(
        default=False,
        description="The client registered with it may hold scope org:admin (manage the "
        "organisation's clients).",
    )


def client_out(client: OAuthClient) -> ClientOut:
    """The public view of a stored client (never its secret)."""
    return ClientOut(
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


def audit_entry_out(entry: AuditEntry) -> AuditEntryOut:
    """The wire view of a stored audit entry."""
    return AuditEntryOut.model_validate(entry)

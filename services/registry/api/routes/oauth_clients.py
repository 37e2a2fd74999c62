"""OAuth clients: RFC 7591 style registration, rotation, revocation, served resources.

Who may do what (least privilege, issue 14): a client reads, rotates and revokes itself; an
organisation's admin (scope ``org:admin``) manages every client of its organisation; operators
read and revoke any client but never rotate one, so a secret goes only to the client it proves
or to its organisation's admin.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, status

from services.protocol.errors import ErrorCode, Forbidden
from services.registry.api.deps import (
    JSON_BODY,
    OPTIONAL_JSON_BODY,
    CallerDep,
    HasherDep,
    InitialAccessDep,
    SessionDep,
    WorkDep,
)
from services.registry.api.schemas import (
    ClientOut,
    ClientRegistered,
    ClientRegistration,
    ClientResources,
    ResourceClaim,
    Rotated,
    Rotation,
    client_out,
)
from services.registry.auth import Caller
from services.registry.models import AuthMethod
from services.registry.store import clients, resources

router = APIRouter(prefix="/v1/oauth", tags=["oauth clients"])

ClientIdPath = Annotated[str, Path(min_length=1, max_length=36, description="OAuth client id.")]


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    dependencies=[JSON_BODY],
    response_model_exclude_none=True,
)
def register(
    session: WorkDep, hasher: HasherDep, access: InitialAccessDep, body: ClientRegistration
) -> ClientRegistered:
    """Register an OAuth client for an approved organisation (RFC 7591 style).

    Authenticate with ``Authorization: Bearer <initial access token>``; the token is spent by a
    successful registration. For ``client_secret_basic`` the answer carries ``client_secret``,
    shown only here (the registry keeps an argon2id hash). For ``private_key_jwt`` send the
    public signing keys as ``jwks``; the client then authenticates with RFC 7523 assertions.
    """
    created = clients.register_client(
        session,
        hasher,
        access,
        auth_method=AuthMethod(body.token_endpoint_auth_method),
        scope=body.scope,
        jwks=body.jwks.as_json() if body.jwks is not None else None,
        client_name=body.client_name,
    )
    client = created.client
    return ClientRegistered(
        client_id=client.client_id,
        client_secret=created.secret,
        client_id_issued_at=int(client.created_at.timestamp()),
        client_secret_expires_at=0 if created.secret is not None else None,
        token_endpoint_auth_method=client.auth_method.value,
        grant_types=body.grant_types,
        scope=client.scope,
        client_name=client.client_name,
        jwks=client.jwks,
        org_id=client.org_id,
    )


def _itself(caller: Caller, client_id: str) -> bool:
    return caller.client_id is not None and caller.client_id == client_id


@router.get("/clients/{client_id}")
def get_client(session: SessionDep, caller: CallerDep, client_id: ClientIdPath) -> ClientOut:
    """One OAuth client, never its secret: the client itself, its organisation's admin
    (``org:admin``) or an operator."""
    client = clients.get_client(session, client_id)
    if not _itself(caller, client_id):
        caller.require_manager(client.org_id)
    return client_out(client)


@router.post("/clients/{client_id}/rotate", dependencies=[OPTIONAL_JSON_BODY])
def rotate(
    session: WorkDep,
    hasher: HasherDep,
    caller: CallerDep,
    client_id: ClientIdPath,
    body: Annotated[Rotation | None, Body()] = None,
) -> Rotated:
    """Replace a client's credentials: the client itself, or its organisation's admin
    (``org:admin``). Operators revoke clients but never rotate them: the new secret goes only
    to a caller allowed to hold it.

    A ``client_secret_basic`` client gets a new secret, shown only in this answer; send no body.
    A ``private_key_jwt`` client sends its new public keys as ``{"jwks": ...}``. The old
    credential stops working at once.
    """
    client = clients.get_client(session, client_id)
    if caller.is_admin:
        raise Forbidden(
            "operators do not rotate an organisation's credentials (the new secret would go to "
            "them): revoke the client, and let the organisation's admin register or rotate one",
            code=ErrorCode.FORBIDDEN,
        )
    if not _itself(caller, client_id):
        caller.require_manager(client.org_id, operators=False)
    rotated = clients.rotate_credentials(
        session,
        hasher,
        client_id,
        actor=caller.subject,
        jwks=body.jwks.as_json() if body is not None and body.jwks is not None else None,
    )
    return Rotated(client=client_out(rotated.client), client_secret=rotated.secret)


@router.post("/clients/{client_id}/revoke")
def revoke(session: WorkDep, caller: CallerDep, client_id: ClientIdPath) -> ClientOut:
    """Revoke a client for good: the client itself, its organisation's admin (``org:admin``)
    or an operator. Idempotent."""
    client = clients.get_client(session, client_id)
    if not _itself(caller, client_id):
        caller.require_manager(client.org_id)
    revoked = clients.revoke_client(session, client_id, actor=caller.subject)
    return client_out(revoked)


@router.post("/clients/{client_id}/resources", dependencies=[JSON_BODY])
def claim_resource(
    session: WorkDep, caller: CallerDep, client_id: ClientIdPath, body: ResourceClaim
) -> ClientResources:
    """Declare that this client serves ``resource`` (RFC 8707: a party service's URL, the
    audience of tokens for it), so that it may introspect tokens for it: the client itself
    (scope ``party:call``; a party does this when it starts) or its organisation's admin.

    Introspection answers a token only to the client holding one of its audiences. A resource
    another organisation's live client holds is a 409 ``resource_taken``; within one
    organisation the claim moves the resource to this client.
    """
    client = clients.get_client(session, client_id)
    if _itself(caller, client_id):
        caller.require_scope("party:call")
    else:
        caller.require_manager(client.org_id, operators=False)
    if client.revoked_at is not None:
        raise Forbidden(f"OAuth client {client_id} is revoked", code=ErrorCode.INVALID_TRANSITION)
    held = resources.claim(session, client, body.resource, actor=caller.subject)
    return ClientResources(client_id=client_id, resources=held)

"""OAuth clients: RFC 7591 style registration, rotation, revocation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, status

from services.registry.api.deps import (
    JSON_BODY,
    OPTIONAL_JSON_BODY,
    CallerDep,
    HasherDep,
    InitialAccessDep,
    SessionDep,
)
from services.registry.api.schemas import (
    ClientOut,
    ClientRegistered,
    ClientRegistration,
    Rotated,
    Rotation,
)
from services.registry.models import AuthMethod
from services.registry.store import clients

router = APIRouter(prefix="/v1/oauth", tags=["oauth clients"])

ClientIdPath = Annotated[str, Path(min_length=1, max_length=36, description="OAuth client id.")]


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    dependencies=[JSON_BODY],
    response_model_exclude_none=True,
)
def register(
    session: SessionDep, hasher: HasherDep, access: InitialAccessDep, body: ClientRegistration
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
    session.commit()
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


@router.get("/clients/{client_id}")
def get_client(session: SessionDep, caller: CallerDep, client_id: ClientIdPath) -> ClientOut:
    """One OAuth client, never its secret (operators, or the owning organisation)."""
    client = clients.get_client(session, client_id)
    caller.require_org(client.org_id)
    return ClientOut.of(client)


@router.post("/clients/{client_id}/rotate", dependencies=[OPTIONAL_JSON_BODY])
def rotate(
    session: SessionDep,
    hasher: HasherDep,
    caller: CallerDep,
    client_id: ClientIdPath,
    body: Annotated[Rotation | None, Body()] = None,
) -> Rotated:
    """Replace a client's credentials (operators, or the owning organisation).

    A ``client_secret_basic`` client gets a new secret, shown only in this answer; send no body.
    A ``private_key_jwt`` client sends its new public keys as ``{"jwks": ...}``. The old
    credential stops working at once.
    """
    client = clients.get_client(session, client_id)
    caller.require_org(client.org_id)
    rotated = clients.rotate_credentials(
        session,
        hasher,
        client_id,
        actor=caller.subject,
        jwks=body.jwks.as_json() if body is not None and body.jwks is not None else None,
    )
    session.commit()
    return Rotated(client=ClientOut.of(rotated.client), client_secret=rotated.secret)


@router.post("/clients/{client_id}/revoke")
def revoke(session: SessionDep, caller: CallerDep, client_id: ClientIdPath) -> ClientOut:
    """Revoke a client for good (operators, or the owning organisation). Idempotent."""
    client = clients.get_client(session, client_id)
    caller.require_org(client.org_id)
    revoked = clients.revoke_client(session, client_id, actor=caller.subject)
    session.commit()
    return ClientOut.of(revoked)
